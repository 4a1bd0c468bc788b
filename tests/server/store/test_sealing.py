"""Encryption at rest in the store: sealed checkpoints, KEK rotation and retirement, audited."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from privacy.envelope import Envelope, Keyring, LocalKeyEncryptionKey
from privacy.errors import KeyUnavailableError
from privacy.sealed_files import write_file
from server.checkpoint_format import RunCheckpoint, open_checkpoint, seal_checkpoint
from server.store import audit, checkpoints, runs
from server.store.models import Checkpoint
from server.store.sealing import rotate, usage

WEIGHTS = [np.arange(64, dtype=np.float32) * 0.123456]


def _checkpoint() -> RunCheckpoint:
    return RunCheckpoint(round=1, weights=WEIGHTS, preprocessing="{}", model_spec={}, run_config={})


def _saved(store, actor, keyring: Keyring) -> str:
    with store.session() as session:
        run = runs.start_run(session=session, actor=actor, name="sealed", config={})
        checkpoints.save_checkpoint(
            session=session,
            actor=actor,
            run_id=run.id,
            round=1,
            blob=seal_checkpoint(_checkpoint(), keyring=keyring),
        )
        return run.id


def test_a_sealed_checkpoint_holds_no_weights_and_opens_back(store, principal_factory):
    ops, _ = principal_factory("ops", "operator")
    keyring = Keyring([LocalKeyEncryptionKey.generate("kek-a")], active="kek-a")
    run_id = _saved(store, ops, keyring)

    with store.session() as session:
        blob = session.scalars(select(Checkpoint.blob)).one()

    assert WEIGHTS[0].tobytes()[:32] not in blob
    restored = open_checkpoint(blob, keyring=keyring, what=f"checkpoint of {run_id}")
    np.testing.assert_array_equal(restored.weights[0], WEIGHTS[0])
    with pytest.raises(KeyUnavailableError, match="is encrypted"):
        open_checkpoint(blob, keyring=None, what="checkpoint")


def test_rotation_rewraps_every_data_key_keeps_ciphertexts_and_is_audited(
    store, admin, principal_factory, tmp_path: Path
):
    ops, _ = principal_factory("ops", "operator")
    old = LocalKeyEncryptionKey.generate("kek-old")
    before_ring = Keyring([old], active="kek-old")
    _saved(store, ops, before_ring)
    key_file = tmp_path / "pki" / "ca.key"
    write_file(key_file, b"-----BEGIN PRIVATE KEY-----\n...", keyring=before_ring)
    with store.session() as session:
        blob_before = session.scalars(select(Checkpoint.blob)).one()
        assert usage(session=session, extra_paths=[tmp_path / "pki"]) == {"kek-old": 2}
    file_before = key_file.read_bytes()
    after_ring = Keyring([old, LocalKeyEncryptionKey.generate("kek-new")], active="kek-new")

    with store.session() as session:
        report = rotate(
            session=session, actor=admin, keyring=after_ring, extra_paths=[tmp_path / "pki"]
        )

    assert (report.checkpoints, report.files) == (1, 1)
    with store.session() as session:
        blob_after = session.scalars(select(Checkpoint.blob)).one()
        assert usage(session=session, extra_paths=[tmp_path / "pki"]) == {"kek-new": 2}
        event = audit.tail(session, limit=1)[0]
    for before, after in ((blob_before, blob_after), (file_before, key_file.read_bytes())):
        assert Envelope.parse(after).ciphertext == Envelope.parse(before).ciphertext
        assert Envelope.parse(after).kek_id == "kek-new"
    assert event["action"] == "keys.rotate" and event["details"]["previous"] == {"kek-old": 2}
    new_only = Keyring([after_ring.kek("kek-new")], active="kek-new")
    opened = open_checkpoint(blob_after, keyring=new_only, what="checkpoint")
    np.testing.assert_array_equal(opened.weights[0], WEIGHTS[0])


def test_rotation_needs_key_manage(store, principal_factory):
    from server.errors import PermissionDeniedError

    ops, _ = principal_factory("ops", "operator")
    keyring = Keyring([LocalKeyEncryptionKey.generate("kek-a")], active="kek-a")

    with pytest.raises(PermissionDeniedError), store.session() as session:
        rotate(session=session, actor=ops, keyring=keyring)
