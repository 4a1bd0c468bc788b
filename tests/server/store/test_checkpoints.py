"""Resume checkpoints in the store."""

from __future__ import annotations

from server.store import checkpoints


def test_checkpoints_keep_the_latest_round(store, operator, two_runs):
    a, _ = two_runs

    with store.session() as session:
        assert checkpoints.latest_checkpoint(session=session, actor=operator, run_id=a) is None
        checkpoints.save_checkpoint(session=session, actor=operator, run_id=a, round=1, blob=b"one")
        checkpoints.save_checkpoint(session=session, actor=operator, run_id=a, round=2, blob=b"two")
        checkpoints.save_checkpoint(session=session, actor=operator, run_id=a, round=2, blob=b"2!")
    with store.session() as session:
        latest = checkpoints.latest_checkpoint(session=session, actor=operator, run_id=a)

    assert (latest.round, latest.blob) == (2, b"2!")
