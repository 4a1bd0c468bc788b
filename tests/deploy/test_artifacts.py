"""Model artifacts sealed at rest: the registry's SHA-256 is the plaintext's, checked after
decryption; a wrong or missing KEK serves nothing. Artifacts travel with the store: a host
that reaches only the database serves, from a local cache by SHA-256, sealed as the store
seals, the digest checked on every load."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from deploy.api import create_app
from deploy.artifacts import ArtifactFetcher, read_artifact
from deploy.errors import ServingError
from deploy.registration import export_and_register
from deploy.serving_model import frame_to_rows
from deploy.settings import ServeSettings
from privacy.envelope import Envelope, Keyring, LocalKeyEncryptionKey, is_sealed
from server.store import repository as repo
from server.store.engine import Store
from server.store.models import ModelArtifact, Run

from .conftest import settings_for

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



def _export(store: Store, model_store, folder, name: str, round: int) -> repo.ModelVersion:
    with store.session() as session:
        run_id = session.scalars(select(Run.id)).first()
        ops = repo.authenticate(session, model_store.keys["ops"])
    registered = export_and_register(store=store, actor=ops, run_id=run_id, name=name,
                                     artifact_dir=folder, round=round, held_out=model_store.test_rows)
    with store.session() as session:
        ops = repo.authenticate(session, model_store.keys["ops"])
        repo.promote_model_version(session=session, actor=ops, name=name,
                                   version=registered.version)
        return repo.get_model_version(session=session, actor=ops, name=name)


def _predict_rows(client: TestClient, model_store, name: str):
    rows = frame_to_rows(model_store.test_rows.head(3), model_store.spec)
    return client.post(f"/v1/models/{name}/predict", json={"rows": rows},
                       headers={"Authorization": f"Bearer {model_store.keys['app']}"})


def test_export_then_delete_the_file_the_service_still_serves_from_the_store(
    model_store, tmp_path
):
    version = _export(model_store.store, model_store, tmp_path / "exported", "heart-moved", 1)
    artifact = tmp_path / "exported" / version.artifact_path.rsplit("/", 1)[-1]
    expected = artifact.read_bytes()
    artifact.unlink()  # the file is gone: a serving host that reaches only the database
    cache = tmp_path / "cache"

    settings = settings_for(model_store.url, artifact_cache_dir=cache, drift_monitoring=False)
    with TestClient(create_app(settings)) as client:
        response = _predict_rows(client, model_store, "heart-moved")

    assert response.status_code == 200, response.text
    assert response.json()["version"] == version.version
    assert len(response.json()["predictions"]) == 3
    assert (cache / f"{version.artifact_sha256}.onnx").read_bytes() == expected
    with model_store.store.session() as session:
        kept = session.get(ModelArtifact, version.artifact_sha256)
        assert kept is not None and kept.blob == expected


def test_a_sealed_store_keeps_and_caches_only_sealed_bytes(model_store, tmp_path):
    keyring = Keyring([KEK], active=KEK.kek_id)
    store = Store(model_store.store.engine, keyring=keyring)
    version = _export(store, model_store, tmp_path / "exported", "heart-sealed-blob", 2)
    for path in (tmp_path / "exported").iterdir():
        path.unlink()
    cache = tmp_path / "cache"

    data = ArtifactFetcher(store, cache_dir=cache).fetch(
        sha256=version.artifact_sha256, path=None, what="heart-sealed-blob")

    assert hashlib.sha256(data).hexdigest() == version.artifact_sha256
    with store.session() as session:
        assert is_sealed(repo.artifact_blob(session=session, sha256=version.artifact_sha256))
    assert is_sealed((cache / f"{version.artifact_sha256}.onnx").read_bytes())
    with pytest.raises(ServingError, match="encrypted"):
        ArtifactFetcher(Store(model_store.store.engine, keyring=None), cache_dir=None).fetch(
            sha256=version.artifact_sha256, path=None, what="heart-sealed-blob")


def test_a_tampered_cache_copy_is_dropped_and_fetched_again(model_store, tmp_path):
    version = _export(model_store.store, model_store, tmp_path / "exported", "heart-cached", 1)
    cache = tmp_path / "cache"
    fetcher = ArtifactFetcher(model_store.store, cache_dir=cache)
    good = fetcher.fetch(sha256=version.artifact_sha256, path=None, what="heart-cached")
    cached = cache / f"{version.artifact_sha256}.onnx"
    cached.write_bytes(b"not the model")

    again = fetcher.fetch(sha256=version.artifact_sha256, path=None, what="heart-cached")

    assert again == good and cached.read_bytes() != b"not the model"


def test_an_artifact_in_neither_place_is_refused_by_name(model_store, tmp_path):
    fetcher = ArtifactFetcher(model_store.store, cache_dir=tmp_path)

    with pytest.raises(ServingError, match="heart v9 is missing"):
        fetcher.fetch(sha256="0" * 64, path=tmp_path / "gone.onnx", what="heart v9")
    with pytest.raises(ServingError, match="neither in the store nor on this host"):
        fetcher.fetch(sha256="0" * 64, path=None, what="heart v9")
