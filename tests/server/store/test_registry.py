"""The model registry: numbering, promotion, lineage, and audited reads."""

from __future__ import annotations

import hashlib

import pytest

from client.contract.report import FitReport
from privacy.errors import ConfigError
from server.errors import ConflictError, NotFoundError, PermissionDeniedError
from server.run_events import RoundRecord
from server.store import audit, registry, runs

SHA = hashlib.sha256(b"model").hexdigest()


@pytest.fixture
def operator(principal_factory):
    return principal_factory("olga", "operator")[0]


def _register(store, actor, name="heart", **kwargs):
    arguments = {
        "artifact_path": "runs/x/model.onnx",
        "artifact_sha256": SHA,
        "input_schema": {"features": ["age"]},
        "output_labels": ["no", "yes"],
        "preprocessing": {"scaler": "standard"},
        "model_spec": {"kind": "mlp"},
    } | kwargs
    with store.session() as session:
        return registry.register_model_version(session=session, actor=actor, name=name, **arguments)


def _stages(store, actor, name="heart"):
    with store.session() as session:
        versions = registry.list_model_versions(session=session, actor=actor, name=name)
        return {v.version: v.stage for v in versions}


def test_versions_are_numbered_per_name_and_start_in_staging(store, operator):
    first, second = _register(store, operator), _register(store, operator)
    other = _register(store, operator, name="wine")

    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert _stages(store, operator) == {1: "staging", 2: "staging"}
    assert (first.created_by, first.output_labels) == ("olga", ["no", "yes"])


def test_promoting_archives_the_previous_production_version(store, operator):
    for _ in range(3):
        _register(store, operator)

    with store.session() as session:
        registry.promote_model_version(session=session, actor=operator, name="heart", version=1)
    with store.session() as session:
        registry.promote_model_version(session=session, actor=operator, name="heart", version=3)
        last = audit.tail(session, limit=1)[0]

    assert _stages(store, operator) == {1: "archived", 2: "staging", 3: "production"}
    assert (last["action"], last["target"], last["details"]) == (
        "model.promote",
        "model:heart@3",
        {"archived": [1]},
    )


def test_an_archived_version_is_promoted_back_a_rollback(store, operator):
    for _ in range(2):
        _register(store, operator)
    for version in (1, 2, 1):
        with store.session() as session:
            registry.promote_model_version(session=session, actor=operator, name="heart", version=version)
    with store.session() as session:
        last = audit.tail(session, limit=1)[0]

    assert _stages(store, operator) == {1: "production", 2: "archived"}
    assert last["details"] == {"archived": [2], "rollback": True}


@pytest.mark.parametrize(("version", "error"), [(1, ConflictError), (9, NotFoundError)])
def test_only_a_staging_version_is_promoted(store, operator, version, error):
    _register(store, operator)
    with store.session() as session:
        registry.promote_model_version(session=session, actor=operator, name="heart", version=1)

    with pytest.raises(error, match="only staging versions"), store.session() as session:
        registry.promote_model_version(
            session=session, actor=operator, name="heart", version=version
        )

    with store.session() as session:
        assert audit.tail(session, limit=1)[0]["outcome"] == "error"


def test_promotion_needs_model_promote(store, operator, principal_factory):
    _register(store, operator)
    auditor, _ = principal_factory("aude", "auditor")

    with pytest.raises(PermissionDeniedError), store.session() as session:
        registry.promote_model_version(session=session, actor=auditor, name="heart", version=1)

    assert _stages(store, operator) == {1: "staging"}


def test_reading_a_model_is_audited(store, operator, principal_factory):
    _register(store, operator)
    with store.session() as session:
        registry.promote_model_version(session=session, actor=operator, name="heart", version=1)
    auditor, _ = principal_factory("aude", "auditor")

    with store.session() as session:
        found = registry.get_model_version(session=session, actor=auditor, name="heart")
        last = audit.tail(session, limit=1)[0]

    assert (found.version, found.stage) == (1, "production")
    assert (last["actor"], last["action"], last["target"]) == (
        "aude",
        "model.read",
        "model:heart@1",
    )


def test_lineage_comes_from_the_run(store, operator):
    with store.session() as session:
        run = runs.start_run(session=session, actor=operator, name="r", config={})
        record = RoundRecord(
            round=1,
            loss=0.4,
            accuracy=0.8,
            accuracy_by_institution={},
            epsilon={},
            participants=["Cleveland"],
            secagg={"num_shares": 3},
            reports=[
                FitReport(
                    institution="Cleveland",
                    round=1,
                    epsilon=0.4,
                    delta=1e-5,
                    steps=5,
                    noise_multiplier=1.2,
                    sample_rate=0.1,
                    max_grad_norm=1.0,
                ),
                FitReport(institution="Hungary", round=1, refused=True, epsilon=0.9),
            ],
        )
        runs.record_round(session=session, actor=operator, run_id=run.id, record=record)
        run_id = run.id

    version = _register(store, operator, run_id=run_id)

    assert version.lineage["run_id"] == run_id and version.lineage["round"] == 1
    assert version.lineage["institutions"] == ["Cleveland"]
    assert version.lineage["epsilon"] == {"Cleveland": 0.4, "Hungary": 0.9}
    assert version.lineage["dp"]["Cleveland"]["noise_multiplier"] == 1.2
    assert version.lineage["secagg"] == {"num_shares": 3}
    assert version.lineage["central_epsilon"] is None


def test_a_bad_digest_is_refused(store, operator):
    with pytest.raises(ConfigError, match="64 lowercase hex"):
        _register(store, operator, artifact_sha256="abc")

    assert _stages(store, operator) == {}
