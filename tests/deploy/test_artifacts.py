"""Model artifacts sealed at rest: the registry's SHA-256 is the plaintext's, checked after
decryption; a wrong or missing KEK serves nothing."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from deploy.api import create_app
from deploy.artifacts import read_artifact
from deploy.errors import ServingError
from deploy.registration import export_and_register
from deploy.serving_model import frame_to_rows
from deploy.settings import ServeSettings
from privacy.envelope import Envelope, Keyring, LocalKeyEncryptionKey, is_sealed
from server.store import repository as repo
from server.store.engine import Store
from server.store.models import Run

KEK = LocalKeyEncryptionKey.generate("kek-artifacts")


@pytest.fixture(scope="module")
def sealed(model_store, tmp_path_factory):
    """Version 3 of ``heart``, exported from round 2 through a store with a keyring."""
    store = Store(model_store.store.engine, keyring=Keyring([KEK], active=KEK.kek_id))
    with store.session() as session:
        run_id = session.scalars(select(Run.id)).first()
        ops = repo.authenticate(session, model_store.keys["ops"])
    registered = export_and_register(
        store=store,
        actor=ops,
        run_id=run_id,
        name="heart",
        artifact_dir=tmp_path_factory.mktemp("sealed"),
        round=2,
        held_out=model_store.test_rows,
    )
    with store.session() as session:
        repo.promote_model_version(
            session=session,
            actor=repo.authenticate(session, model_store.keys["ops"]),
            name="heart",
            version=registered.version,
        )
    return registered


def test_the_artifact_is_sealed_and_holds_no_weights(sealed, model_store):
    blob = sealed.exported.path.read_bytes()

    assert is_sealed(blob) and Envelope.parse(blob).kek_id == KEK.kek_id
    for array in model_store.weights[2]:
        assert array.astype("float32").tobytes()[:16] not in blob
    assert sealed.exported.path.stat().st_mode & 0o077 == 0


def test_the_registered_digest_is_the_plaintexts_and_is_checked(sealed):
    keyring = Keyring([KEK], active=KEK.kek_id)

    data = read_artifact(
        sealed.exported.path, sha256=sealed.exported.sha256, keyring=keyring, what="heart v3"
    )

    assert hashlib.sha256(data).hexdigest() == sealed.exported.sha256
    with pytest.raises(ServingError, match="does not match its registered SHA-256"):
        read_artifact(sealed.exported.path, sha256="0" * 64, keyring=keyring, what="heart v3")


def test_a_wrong_or_missing_kek_fails_clearly(sealed):
    impostor = Keyring([LocalKeyEncryptionKey.generate(KEK.kek_id)], active=KEK.kek_id)

    with pytest.raises(ServingError, match=r"does not open under KEK 'kek-artifacts'.*refusing"):
        read_artifact(sealed.exported.path, sha256=sealed.exported.sha256, keyring=impostor,
                      what="heart v3")
    with pytest.raises(ServingError, match=r"encrypted.*FEDWARDEN_KEYRING"):
        read_artifact(sealed.exported.path, sha256=sealed.exported.sha256, keyring=None,
                      what="heart v3")


def _serve(model_store, keyring: Keyring | None) -> tuple[int, dict]:
    store = Store(model_store.store.engine, keyring=keyring)
    settings = ServeSettings(database_url=model_store.url, drift_monitoring=False)
    rows = frame_to_rows(model_store.test_rows.head(2), model_store.spec)
    with TestClient(create_app(settings, store=store)) as client:
        response = client.post("/v1/models/heart/predict", json={"rows": rows},
                               headers={"Authorization": f"Bearer {model_store.keys['app']}"})
        return response.status_code, response.json()


def test_the_service_serves_with_the_right_kek_and_nothing_with_a_wrong_one(sealed, model_store):
    right = Keyring([KEK], active=KEK.kek_id)
    wrong = Keyring([LocalKeyEncryptionKey.generate(KEK.kek_id)], active=KEK.kek_id)

    status, body = _serve(model_store, right)
    assert status == 200 and body["version"] == sealed.version

    status, body = _serve(model_store, wrong)
    assert status != 200 and "predictions" not in body


def test_a_sealed_artifact_is_quantized_from_a_private_copy_and_sealed_again(
    model_store, tmp_path
):
    keyring = Keyring([KEK], active=KEK.kek_id)
    store = Store(model_store.store.engine, keyring=keyring)
    with store.session() as session:
        run_id = session.scalars(select(Run.id)).first()
        ops = repo.authenticate(session, model_store.keys["ops"])
    registered = export_and_register(
        store=store,
        actor=ops,
        run_id=run_id,
        name="heart-sealed-int8",
        artifact_dir=tmp_path,
        round=2,
        held_out=model_store.test_rows,
        quantize="dynamic",
    )

    path = registered.exported.path
    assert path.parent == tmp_path.resolve() and path.name.endswith(".int8-dynamic.onnx")
    assert is_sealed(path.read_bytes()) and path.stat().st_mode & 0o077 == 0
    assert all(is_sealed(p.read_bytes()) for p in tmp_path.iterdir())  # no plaintext left
    plaintext = read_artifact(
        path, sha256=registered.exported.sha256, keyring=keyring, what="the INT8 artifact"
    )
    assert hashlib.sha256(plaintext).hexdigest() == registered.exported.sha256
    assert registered.quantization is not None and registered.quantization["chosen"] == "dynamic"
