"""From a run's checkpoint to a registered model version.

``export_and_register`` reads the run's checkpoint (its last round, or a given
one), exports the global model with its preprocessing to ONNX, checks parity,
and registers the artifact in ``staging`` (its bytes kept in the store too, so any
host that reaches the store can serve it) with its lineage: run, round,
institutions, ε per institution, DP and SecAgg settings, and the run's
reference profile (what drift is measured against). The profile's prediction
blocks describe the model it was computed with, the run's last; a version
exported from an earlier round keeps only its feature blocks.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.orm import Session

from client.contract.architecture import ModelSpec
from client.contract.errors import DataError
from client.contract.preprocessing import PreprocessingSpec
from client.contract.profile import ReferenceProfile
from client.contract.schema import TableSchema, validate_frame
from deploy.artifacts import keep_in_store, read_artifact, write_artifact
from deploy.onnx_contract import sha256_file
from deploy.onnx_export import ExportedModel, export_model, sample_rows
from deploy.quantize import DEFAULT_TOLERANCE_POINTS, QuantizationDecision, quantize_artifact
from deploy.serving_model import encode_rows, frame_to_rows
from privacy.envelope import Keyring
from server.checkpoint_format import open_checkpoint
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
    quantization: dict[str, Any] | None = None


def export_and_register(
    *,
    store: Store,
    actor: Principal,
    run_id: str,
    name: str,
    artifact_dir: Path,
    round: int | None = None,
    held_out: pd.DataFrame | None = None,
    quantize: str | None = None,
    quantize_tolerance_points: float = DEFAULT_TOLERANCE_POINTS,
    held_out_path: Path | None = None,
) -> Registered:
    """Export the run's model after ``round`` (default: its last) and register it in staging.

    With ``quantize`` (``dynamic``, ``static`` or ``auto``) the artifact is
    quantised to INT8 and checked on ``held_out`` (accuracy against its labels)
    or, without it, on rows sampled from the schema (agreement with FP32);
    ``deploy.quantize`` decides, and its decision goes into the lineage.
    """
    with store.session() as session:
        row = repo.checkpoint_for_export(
            session=session, actor=_same(session, actor), run_id=run_id, round=round
        )
        run_id = row.run_id  # the full id, where a unique prefix named the run
        checkpoint = open_checkpoint(
            row.blob, keyring=store.keyring, what=f"checkpoint of run {run_id} round {row.round}"
        )
    preprocessing = PreprocessingSpec.from_json(checkpoint.preprocessing)
    if held_out_path is not None:
        held_out = read_labelled_rows(held_out_path, preprocessing.schema)
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
    decision = None
    if quantize is not None:
        decision, exported = _quantize_exported(
            exported,
            preprocessing,
            held_out,
            quantize,
            tolerance_points=quantize_tolerance_points,
            seed=checkpoint.round,
            keyring=store.keyring,
        )
        path = exported.path
    with store.session() as session:
        lineage = repo.run_lineage(session=session, run_id=run_id, up_to_round=checkpoint.round)
        lineage["parity"] = {
            "rows": exported.parity.rows,
            "max_abs_diff": exported.parity.max_abs_diff,
        }
        lineage["run_config"] = checkpoint.run_config
        if decision is not None:
            lineage["quantization"] = decision.to_lineage()
        profile = _profile_for(
            repo.run_profile(session=session, run_id=run_id), round=checkpoint.round
        )
        keep_in_store(session, path=path, sha256=exported.sha256, keyring=store.keyring)
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
    return Registered(
        name=name,
        version=number,
        round=checkpoint.round,
        exported=exported,
        quantization=None if decision is None else decision.to_lineage(),
    )


def read_labelled_rows(path: Path, schema: TableSchema) -> pd.DataFrame:
    """Rows with their target from a CSV or Parquet file, checked against ``schema``."""
    suffix = path.suffix.lower()
    if not path.is_file() or suffix not in (".csv", ".parquet", ".pq"):
        raise DataError(f"{path} is not a CSV or Parquet file", path=str(path))
    try:
        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # pandas and pyarrow raise many types for a malformed file
        raise DataError(f"cannot read {path}: {exc}", path=str(path)) from exc
    return validate_frame(frame, schema)


def _quantize_exported(
    exported: ExportedModel,
    preprocessing: PreprocessingSpec,
    held_out: pd.DataFrame | None,
    mode: str,
    *,
    tolerance_points: float,
    seed: int,
    keyring: Keyring | None,
) -> tuple[QuantizationDecision, ExportedModel]:
    """Quantise an exported artifact; a sealed one is quantised from a plaintext copy in a
    private temporary folder, and the artifact kept is sealed again next to the original."""
    if keyring is None:
        decision = _quantized(
            exported.path,
            preprocessing,
            held_out,
            mode,
            tolerance_points=tolerance_points,
            seed=seed,
        )
        if decision.path != exported.path:
            exported = ExportedModel(
                path=decision.path, sha256=sha256_file(decision.path), parity=exported.parity
            )
        return decision, exported
    plaintext = read_artifact(
        exported.path, sha256=exported.sha256, keyring=keyring, what="the exported artifact"
    )
    shm = Path("/dev/shm")  # memory-backed where there is one, as for materialized keys
    with tempfile.TemporaryDirectory(
        prefix="fedwarden-quantize-", dir=shm if shm.is_dir() else None
    ) as folder:
        plain = Path(folder) / exported.path.name
        plain.write_bytes(plaintext)
        plain.chmod(0o600)
        decision = _quantized(
            plain, preprocessing, held_out, mode, tolerance_points=tolerance_points, seed=seed
        )
        if decision.path == plain:
            decision = dataclasses.replace(decision, path=exported.path)
            return decision, exported
        kept = exported.path.with_name(decision.path.name)
        sha256 = write_artifact(kept, decision.path.read_bytes(), keyring=keyring)
    decision = dataclasses.replace(decision, path=kept)
    return decision, ExportedModel(path=kept, sha256=sha256, parity=exported.parity)


def _quantized(
    path: Path,
    preprocessing: PreprocessingSpec,
    held_out: pd.DataFrame | None,
    mode: str,
    *,
    tolerance_points: float,
    seed: int,
) -> QuantizationDecision:
    target = preprocessing.schema.target.name
    if held_out is not None and len(held_out):
        frame = held_out
        labels = preprocessing.labels(held_out) if target in held_out else None
    else:
        frame, labels = sample_rows(preprocessing, count=512, seed=seed), None
    numeric, categorical = encode_rows(frame_to_rows(frame, preprocessing), preprocessing)
    return quantize_artifact(
        path,
        mode=mode,
        numeric=numeric,
        categorical=categorical,
        labels=labels,
        tolerance_points=tolerance_points,
    )


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
