"""INT8 where it pays: quantise an exported artifact, check it, measure it, decide.

``quantize_artifact`` writes an INT8 copy of an ONNX artifact with ONNX
Runtime's tools (``dynamic``: weights INT8, activations quantised on the fly;
``static``: weights and activations, calibrated on held-out rows, QDQ format),
then on held-out rows checks it against the FP32 artifact: accuracy (against
the true labels when the rows have them, else agreement with FP32's classes),
the largest probability difference, and the median latency of both on one
thread at batch 1 and 64 on this machine.

An INT8 artifact whose accuracy is more than ``tolerance_points`` percentage
points below FP32's is refused (``ExportError``). With ``auto``, both kinds are
tried and the fastest at batch 64 within the tolerance is kept, FP32 included:
for small tabular models INT8 is often slower on a CPU. The decision, the
speed-up and the accuracy delta go into the model version's lineage.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from deploy.errors import ExportError
from deploy.onnx_contract import INPUT_NAMES

logger = logging.getLogger(__name__)

QuantizeMode = Literal["dynamic", "static", "auto"]
MODES: tuple[str, ...] = ("dynamic", "static", "auto")
DEFAULT_TOLERANCE_POINTS = 0.5


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """One artifact on the held-out rows."""

    kind: str
    accuracy: float
    max_abs_diff: float
    ms_batch_1: float
    ms_batch_64: float


@dataclass(frozen=True, kw_only=True)
class QuantizationDecision:
    """What was asked, what was kept, and the figures behind it (kept in the lineage)."""

    asked: str
    chosen: str
    path: Path
    rows: int
    accuracy_basis: str
    tolerance_points: float
    fp32: Measurement
    candidates: tuple[Measurement, ...]
    reason: str

    @property
    def kept(self) -> Measurement:
        return next((m for m in self.candidates if m.kind == self.chosen), self.fp32)

    def to_lineage(self) -> dict[str, Any]:
        kept = self.kept
        return {
            "asked": self.asked,
            "chosen": self.chosen,
            "reason": self.reason,
            "rows": self.rows,
            "accuracy_basis": self.accuracy_basis,
            "tolerance_points": self.tolerance_points,
            "speedup_batch_64": self.fp32.ms_batch_64 / kept.ms_batch_64,
            "speedup_batch_1": self.fp32.ms_batch_1 / kept.ms_batch_1,
            "accuracy_delta_points": 100 * (kept.accuracy - self.fp32.accuracy),
            "fp32": asdict(self.fp32),
            "candidates": [asdict(m) for m in self.candidates],
        }


def quantize_artifact(
    path: Path,
    *,
    mode: str,
    numeric: np.ndarray,
    categorical: np.ndarray,
    labels: np.ndarray | None = None,
    tolerance_points: float = DEFAULT_TOLERANCE_POINTS,
    repeats: int = 200,
) -> QuantizationDecision:
    """Quantise ``path`` as ``mode`` asks and decide what to serve (see the module)."""
    if mode not in MODES:
        raise ExportError(f"unknown quantisation {mode!r}; expected one of {', '.join(MODES)}")
    if not tolerance_points >= 0:
        raise ExportError(f"the accuracy tolerance must be >= 0 points, got {tolerance_points}")
    if len(numeric) == 0:
        raise ExportError("quantisation needs held-out rows to check the INT8 model on")
    feeds = {INPUT_NAMES[0]: numeric, INPUT_NAMES[1]: categorical}
    reference = _session(path).run(None, feeds)[0]
    truth = labels if labels is not None else reference.argmax(axis=1)
    basis = "true labels" if labels is not None else "agreement with FP32's classes"
    fp32 = _measure("fp32", path, feeds, reference, truth, repeats=repeats)
    kinds = ("dynamic", "static") if mode == "auto" else (mode,)
    candidates = []
    for kind in kinds:
        target = path.with_name(f"{path.stem}.int8-{kind}.onnx")
        try:
            _quantize(kind, path, target, feeds)
        except Exception as exc:  # onnxruntime's tools raise many types
            if mode != "auto":
                raise ExportError(f"{kind} INT8 quantisation failed: {exc}") from exc
            logger.warning("%s INT8 quantisation failed: %s", kind, exc)
            continue
        candidates.append(_measure(kind, target, feeds, reference, truth, repeats=repeats))
    within = [m for m in candidates if 100 * (fp32.accuracy - m.accuracy) <= tolerance_points]
    for measured in candidates:
        if measured not in within and mode != "auto":
            _remove(path, measured.kind)
            raise ExportError(
                f"{measured.kind} INT8 loses {100 * (fp32.accuracy - measured.accuracy):.2f} "
                f"accuracy points on {len(numeric)} held-out rows ({basis}), more than the "
                f"tolerance of {tolerance_points:g}; refusing it",
                accuracy_fp32=fp32.accuracy,
                accuracy_int8=measured.accuracy,
            )
    if mode == "auto":
        best = min([fp32, *within], key=lambda m: m.ms_batch_64)
        chosen = best.kind
        reason = (
            f"fastest at batch 64 within {tolerance_points:g} accuracy points: {chosen} "
            f"({best.ms_batch_64:.4f} ms vs FP32 {fp32.ms_batch_64:.4f} ms)"
        )
    else:
        chosen = mode
        reason = f"{mode} asked for; within {tolerance_points:g} accuracy points of FP32"
    for measured in candidates:
        if measured.kind != chosen:
            _remove(path, measured.kind)
    kept = path if chosen == "fp32" else path.with_name(f"{path.stem}.int8-{chosen}.onnx")
    decision = QuantizationDecision(
        asked=mode,
        chosen=chosen,
        path=kept,
        rows=len(numeric),
        accuracy_basis=basis,
        tolerance_points=tolerance_points,
        fp32=fp32,
        candidates=tuple(candidates),
        reason=reason,
    )
    logger.info("quantisation: %s", reason)
    return decision


def _quantize(kind: str, source: Path, target: Path, feeds: dict[str, np.ndarray]) -> None:
    source = _without_value_info(source, target)
    try:
        _quantize_plain(kind, source, target, feeds)
    finally:
        source.unlink(missing_ok=True)


def _without_value_info(source: Path, target: Path) -> Path:
    """A copy of ``source`` without its intermediate shapes: the exporter records some for its
    example batch, which ONNX's shape inference (run by the quantiser) then contradicts."""
    import onnx

    model = onnx.load(str(source))
    del model.graph.value_info[:]
    plain = target.with_name(f"{target.stem}.plain.onnx")
    onnx.save(model, str(plain))
    return plain


def _quantize_plain(kind: str, source: Path, target: Path, feeds: dict[str, np.ndarray]) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if kind == "dynamic":
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
        return

    class Rows(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches: Iterator[dict[str, np.ndarray]] = iter(
                {name: array[i : i + 32] for name, array in feeds.items()}
                for i in range(0, len(feeds[INPUT_NAMES[0]]), 32)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    quantize_static(
        str(source),
        str(target),
        Rows(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gemm"],
    )


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _measure(
    kind: str,
    path: Path,
    feeds: dict[str, np.ndarray],
    reference: np.ndarray,
    truth: np.ndarray,
    *,
    repeats: int,
) -> Measurement:
    session = _session(path)
    (probabilities,) = session.run(None, feeds)
    timings = {}
    for batch in (1, 64):
        part = {name: _rows(array, batch) for name, array in feeds.items()}
        samples = []
        for _ in range(repeats):
            began = time.perf_counter()
            session.run(None, part)
            samples.append(time.perf_counter() - began)
        timings[batch] = 1000 * statistics.median(samples[repeats // 10 :])
    return Measurement(
        kind=kind,
        accuracy=float((probabilities.argmax(axis=1) == truth).mean()),
        max_abs_diff=float(np.abs(probabilities - reference).max()),
        ms_batch_1=timings[1],
        ms_batch_64=timings[64],
    )


def _rows(array: np.ndarray, count: int) -> np.ndarray:
    repeated = np.resize(array, (max(count, len(array)), *array.shape[1:]))
    return np.ascontiguousarray(repeated[:count])


def _remove(path: Path, kind: str) -> None:
    path.with_name(f"{path.stem}.int8-{kind}.onnx").unlink(missing_ok=True)
