"""Export a run's global model to ONNX, and refuse an artifact that does not match PyTorch.

The exported graph is ``ServingModule``: preprocessing, network and softmax, with a
dynamic batch axis. Parity is checked on held-out rows (the institutions' own
when a simulation has them) and on rows sampled from the schema (values across
each declared range, every category, missing values): the ONNX output must be
within ``tolerance`` of the training path (``PreprocessingSpec.transform``, the
network, softmax) and predict the same classes.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from client.contract.architecture import ModelSpec
from client.contract.preprocessing import PreprocessingSpec
from client.contract.schema import CategoricalFeature, NumericFeature
from client.models import build_model, set_weights
from deploy.artifacts import write_artifact
from deploy.errors import ExportError
from deploy.onnx_contract import INPUT_NAMES, OUTPUT_NAME
from deploy.serving_model import ServingModule, encode_rows, frame_to_rows
from privacy.envelope import Keyring

logger = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-5


@dataclass(frozen=True)
class ParityReport:
    rows: int
    max_abs_diff: float
    same_classes: bool

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= PARITY_TOLERANCE and self.same_classes


@dataclass(frozen=True)
class ExportedModel:
    path: Path
    sha256: str
    parity: ParityReport


def serving_module(
    weights: list[np.ndarray], model_spec: ModelSpec, spec: PreprocessingSpec
) -> ServingModule:
    """The global model with its preprocessing in front, in eval mode."""
    network = build_model(model_spec)
    set_weights(network, weights)
    return ServingModule(spec, network).eval()


def export_onnx(module: ServingModule, path: Path | None = None) -> bytes:
    """``module`` as one self-contained ONNX model with a dynamic batch axis (its bytes),
    also written in the clear to ``path`` if one is given (tests, tools)."""
    example = (
        torch.zeros(2, module.num_numeric, dtype=torch.float32),
        torch.zeros(2, module.num_categorical, dtype=torch.long),
    )
    batch = torch.export.Dim("batch", min=1)
    # The exporter logs a warning for each torchvision operator it cannot register;
    # the served graphs use none of them.
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                example,
                dynamo=True,
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch}, {0: batch}),
                verbose=False,
            )
            assert program is not None
            data: bytes = program.model_proto.SerializeToString()
    except Exception as exc:  # the exporter raises many types; all mean "no artifact"
        raise ExportError(f"ONNX export failed: {exc}") from exc
    finally:
        registration.setLevel(level)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return data


def sample_rows(spec: PreprocessingSpec, *, count: int, seed: int) -> pd.DataFrame:
    """Rows drawn from the schema alone: no data needed, every edge included."""
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for feature in spec.schema.features:
        if isinstance(feature, NumericFeature):
            low, high = feature.range
            values = rng.uniform(low, high, count)
            if count >= 2:
                values[:2] = (low, high)
            if feature.nullable:
                values[rng.random(count) < 0.1] = np.nan
            columns[feature.name] = values
        else:
            assert isinstance(feature, CategoricalFeature)
            values = rng.choice(list(feature.categories), count).astype(object)
            if feature.nullable:
                values[rng.random(count) < 0.1] = None
            columns[feature.name] = values
    return pd.DataFrame(columns)


def check_parity(
    artifact: Path | bytes, module: ServingModule, spec: PreprocessingSpec, frame: pd.DataFrame
) -> ParityReport:
    """Compare the ONNX artifact (a file or its bytes) with the training path on ``frame``."""
    import onnxruntime as ort

    source = str(artifact) if isinstance(artifact, Path) else artifact
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    numeric, categorical = encode_rows(frame_to_rows(frame, spec), spec)
    (onnx_probs,) = session.run(None, {"numeric": numeric, "categorical": categorical})
    with torch.no_grad():
        logits = module.model(torch.as_tensor(spec.transform(frame)))
        torch_probs = torch.softmax(logits, dim=1).numpy()
    # A row whose top two classes are tied within the tolerance may flip either way.
    top2 = np.sort(torch_probs, axis=1)[:, -2:]
    decided = (top2[:, 1] - top2[:, 0]) > 2 * PARITY_TOLERANCE
    agree = onnx_probs.argmax(1) == torch_probs.argmax(1)
    return ParityReport(
        rows=len(frame),
        max_abs_diff=float(np.abs(onnx_probs - torch_probs).max()),
        same_classes=bool(agree[decided].all()),
    )


def export_model(
    *,
    weights: list[np.ndarray],
    model_spec: ModelSpec,
    preprocessing: PreprocessingSpec,
    path: Path,
    held_out: pd.DataFrame | None = None,
    seed: int = 0,
    keyring: Keyring | None = None,
) -> ExportedModel:
    """Export, check parity, write the artifact (sealed when ``keyring`` is given) and return
    the plaintext's hash; raise ``ExportError`` on a mismatch.

    An artifact that fails parity is never written, so it cannot be registered by mistake.
    """
    module = serving_module(weights, model_spec, preprocessing)
    data = export_onnx(module)
    frames = [sample_rows(preprocessing, count=512, seed=seed)]
    if held_out is not None and len(held_out):
        frames.append(held_out[preprocessing.schema.feature_names])
    rows = pd.concat(frames, ignore_index=True)
    parity = check_parity(data, module, preprocessing, rows)
    logger.info(
        "parity on %d rows: max |Δp| %.2e, same classes %s",
        parity.rows,
        parity.max_abs_diff,
        parity.same_classes,
    )
    if not parity.passed:
        raise ExportError(
            f"the ONNX artifact does not match the PyTorch model on {parity.rows} rows "
            f"(max |Δp| {parity.max_abs_diff:.2e}, tolerance {PARITY_TOLERANCE:g}; same classes: "
            f"{parity.same_classes}); refusing to register it",
            max_abs_diff=parity.max_abs_diff,
        )
    sha256 = write_artifact(path, data, keyring=keyring)
    return ExportedModel(path=path, sha256=sha256, parity=parity)
