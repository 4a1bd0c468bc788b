"""From a run's checkpoint to a registered model version.

``export_and_register`` reads the run's checkpoint (its last round, or a given
one), exports the global model with its preprocessing to ONNX, checks parity,
and registers the artifact in ``staging`` with its lineage: run, round,
institutions, ε per institution, DP and SecAgg settings, and the run's
reference profile (what drift is measured against). The profile's prediction
blocks describe the model it was computed with, the run's last; a version
exported from an earlier round keeps only its feature blocks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.orm import Session

from client.errors import DataError
from client.models import ModelSpec
from client.preprocessing import PreprocessingSpec
from client.profile import ReferenceProfile
from deploy.onnx_export import ExportedModel, export_model
from server.checkpoints import open_checkpoint
from server.errors import NotFoundError
from server.store import repository as repo
from server.store.engine import Store
from server.store.models import Principal

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registered:
    name: str
    version: int
    round: int
    exported: ExportedModel


def export_and_register(
    *,
    store: Store,
    actor: Principal,
    run_id: str,
    name: str,
    artifact_dir: Path,
    round: int | None = None,
    held_out: pd.DataFrame | None = None,
) -> Registered:
    """Export the run's model after ``round`` (default: its last) and register it in staging."""
    with store.session() as session:
        row = repo.checkpoint_for_export(
            session=session, actor=_same(session, actor), run_id=run_id, round=round
        )
        checkpoint = open_checkpoint(
            row.blob, keyring=store.keyring, what=f"checkpoint of run {run_id} round {row.round}"
        )
    preprocessing = PreprocessingSpec.from_json(checkpoint.preprocessing)
    model_spec = ModelSpec.from_dict(checkpoint.model_spec)
    path = artifact_dir.resolve() / f"{name}-{run_id[:8]}-round{checkpoint.round}.onnx"
    exported = export_model(
        weights=checkpoint.weights,
        model_spec=model_spec,
        preprocessing=preprocessing,
        path=path,
        held_out=held_out,
        seed=checkpoint.round,
        keyring=store.keyring,
    )
    with store.session() as session:
        lineage = repo.run_lineage(session=session, run_id=run_id, up_to_round=checkpoint.round)
        lineage["parity"] = {
            "rows": exported.parity.rows,
            "max_abs_diff": exported.parity.max_abs_diff,
        }
        lineage["run_config"] = checkpoint.run_config
        profile = _profile_for(
            repo.run_profile(session=session, run_id=run_id), round=checkpoint.round
        )
        version = repo.register_model_version(
            session=session,
            actor=_same(session, actor),
            name=name,
            artifact_path=str(path),
            artifact_sha256=exported.sha256,
            input_schema=preprocessing.schema.model_dump(mode="json"),
            output_labels=list(preprocessing.schema.target.labels),
            preprocessing=preprocessing.to_dict(),
            model_spec=model_spec.to_dict(),
            run_id=run_id,
            lineage=lineage,
            profile=profile,
        )
        number = version.version
    logger.info("registered %s v%d from run %s round %d", name, number, run_id, checkpoint.round)
    return Registered(name=name, version=number, round=checkpoint.round, exported=exported)


def _profile_for(stored: dict[str, Any] | None, *, round: int) -> dict[str, Any] | None:
    """The run's profile as it fits the model after ``round`` (``None``: no usable profile)."""
    if stored is None:
        return None
    try:
        profile = ReferenceProfile.from_dict(stored)
    except DataError as exc:
        logger.warning("the run's reference profile cannot be read, registering none: %s", exc)
        return None
    if profile.round is not None and profile.round != round:
        profile = profile.without_predictions()
    return profile.to_dict()


def _same(session: Session, actor: Principal) -> Principal:
    """The actor as a row of this session (rows are loaded per session)."""
    row = session.get(Principal, actor.id)
    if row is None:
        raise NotFoundError(f"principal {actor.name!r} is gone", principal=actor.name)
    return row
