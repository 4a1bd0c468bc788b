"""Runs and rounds in the store."""

from __future__ import annotations

import pytest

from privacy.errors import ConfigError
from server.errors import NotFoundError, PermissionDeniedError
from server.store import audit, runs
from tests.server.store.conftest import record_of


def test_stopping_a_run_needs_run_stop(store, operator, two_runs, principal_factory):
    a, _ = two_runs
    auditor, _ = principal_factory("aude", "auditor")

    with pytest.raises(PermissionDeniedError), store.session() as session:
        runs.end_run(session=session, actor=auditor, run_id=a, status="stopped", reason="no")
    with store.session() as session:
        run = runs.end_run(
            session=session, actor=operator, run_id=a, status="stopped", reason="stopped by olga"
        )

    assert (run.status, run.stopped_reason) == ("stopped", "stopped by olga")


def test_an_unknown_run_is_refused_and_audited(store, operator):
    with pytest.raises(NotFoundError, match="no run with id 'nope'"), store.session() as session:
        runs.record_round(session=session, actor=operator, run_id="nope", record=record_of(1, {}))

    with store.session() as session:
        event = audit.tail(session, limit=1)[0]
    assert (event["action"], event["outcome"], event["target"]) == (
        "round.record",
        "error",
        "run:nope",
    )


def test_reading_a_run_returns_its_rounds_and_is_audited(store, two_runs, principal_factory):
    a, _ = two_runs
    auditor, _ = principal_factory("aude", "auditor")

    with store.session() as session:
        run, rounds = runs.get_run(session=session, actor=auditor, run_id=a)
        event = audit.tail(session, limit=1)[0]

    assert (run.name, [r.round for r in rounds]) == ("a", [1, 2])
    assert (event["actor"], event["action"], event["target"]) == ("aude", "run.read", f"run:{a}")



def test_a_unique_prefix_of_a_run_id_names_the_run(store, operator, two_runs, principal_factory):
    a, _ = two_runs
    auditor, _ = principal_factory("aude", "auditor")
    with store.session() as session:
        for run_id in ("abcd0000-x", "abcd1111-x"):
            runs.start_run(session=session, actor=operator, name=run_id, config={}, run_id=run_id)

    with store.session() as session:
        run, rounds = runs.get_run(session=session, actor=auditor, run_id=a[:8])
    with pytest.raises(ConfigError, match="more than one run"), store.session() as session:
        runs.get_run(session=session, actor=auditor, run_id="abcd")
    with pytest.raises(NotFoundError), store.session() as session:
        runs.get_run(session=session, actor=auditor, run_id="abc")  # too short to be a prefix

    assert (run.id, [r.round for r in rounds]) == (a, [1, 2])
