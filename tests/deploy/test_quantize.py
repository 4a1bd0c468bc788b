"""INT8 export: quantised, checked on held-out rows, measured, and the decision kept in the lineage."""

from __future__ import annotations

import numpy as np
import pytest

from deploy.errors import ExportError
from deploy.predictor import LoadedModel
from deploy.quantize import quantize_artifact
from deploy.registration import export_and_register
from deploy.serving_model import encode_rows, frame_to_rows
from server.store import repository as repo


def ops(model_store):
    with model_store.store.session() as session:
        return repo.authenticate(session, model_store.keys["ops"])


def test_dynamic_int8_is_registered_with_its_figures_and_serves(model_store, tmp_path):
    registered = export_and_register(store=model_store.store, actor=ops(model_store), run_id=_run(model_store),
                                     name="heart-int8", artifact_dir=tmp_path, held_out=model_store.test_rows,
                                     quantize="dynamic")

    with model_store.store.session() as session:
        version = repo.get_model_version(session=session, actor=ops(model_store), name="heart-int8",
                                         version=registered.version)
        lineage, path, sha256, preprocessing = version.lineage, version.artifact_path, version.artifact_sha256, version.preprocessing
    decision = lineage["quantization"]
    assert decision["chosen"] == "dynamic" and path.endswith(".int8-dynamic.onnx")
    assert decision["accuracy_basis"] == "true labels" and decision["rows"] == len(model_store.test_rows)
    assert abs(decision["accuracy_delta_points"]) <= 0.5
    assert decision["speedup_batch_64"] > 0 and decision["fp32"]["ms_batch_64"] > 0
    from pathlib import Path

    from client.contract.preprocessing import PreprocessingSpec

    served = LoadedModel(name="heart-int8", version=registered.version, path=Path(path), sha256=sha256,
                         preprocessing=PreprocessingSpec.from_dict(preprocessing), providers=["CPUExecutionProvider"])
    fp32 = LoadedModel(name="heart", version=2, path=next(model_store.artifacts.glob("*round2.onnx")),
                       sha256=_sha(model_store, 2), preprocessing=model_store.spec, providers=["CPUExecutionProvider"])
    rows = frame_to_rows(model_store.test_rows, model_store.spec)
    assert np.abs(served.predict(rows).probabilities - fp32.predict(rows).probabilities).max() < 0.05


def test_auto_keeps_the_faster_within_the_tolerance_and_says_why(model_store, tmp_path):
    registered = export_and_register(store=model_store.store, actor=ops(model_store), run_id=_run(model_store),
                                     name="heart-auto", artifact_dir=tmp_path, held_out=model_store.test_rows,
                                     quantize="auto")

    decision = registered.quantization
    assert decision is not None and decision["chosen"] in ("fp32", "dynamic", "static")
    timings = {m["kind"]: m["ms_batch_64"] for m in [decision["fp32"], *decision["candidates"]]
               if 100 * (decision["fp32"]["accuracy"] - m["accuracy"]) <= 0.5}
    assert decision["chosen"] == min(timings, key=timings.__getitem__)
    assert "fastest at batch 64" in decision["reason"]
    left = {p.name for p in tmp_path.iterdir()}
    assert all(".int8-" not in name or f".int8-{decision['chosen']}." in name for name in left)


def test_an_int8_model_past_the_tolerance_is_refused(model_store, tmp_path):
    registered = export_and_register(store=model_store.store, actor=ops(model_store), run_id=_run(model_store),
                                     name="heart-base", artifact_dir=tmp_path, held_out=model_store.test_rows)
    numeric, categorical = encode_rows(frame_to_rows(model_store.test_rows, model_store.spec), model_store.spec)
    import onnxruntime as ort

    fp32 = ort.InferenceSession(str(registered.exported.path)).run(None, {"numeric": numeric, "categorical": categorical})[0]
    # Labels on which FP32 is right on every row but the first, which only INT8 could get right:
    # any INT8 model then differs from FP32's accuracy only by rows it flips.
    labels = fp32.argmax(axis=1)
    decision = quantize_artifact(registered.exported.path, mode="dynamic", numeric=numeric, categorical=categorical,
                                 labels=labels, tolerance_points=100.0, repeats=5)
    flipped = 100 * (1 - decision.kept.accuracy)
    if flipped == 0:
        pytest.skip("dynamic INT8 flipped no held-out row of this model: nothing to refuse")
    with pytest.raises(ExportError, match="accuracy points"):
        quantize_artifact(registered.exported.path, mode="dynamic", numeric=numeric, categorical=categorical,
                          labels=labels, tolerance_points=flipped / 2, repeats=5)
    with pytest.raises(ExportError, match="unknown quantisation"):
        quantize_artifact(registered.exported.path, mode="int4", numeric=numeric, categorical=categorical)


def _run(model_store) -> str:
    from sqlalchemy import select

    from server.store.models import Run

    with model_store.store.session() as session:
        return str(session.scalars(select(Run.id)).one())


def _sha(model_store, version: int) -> str:
    with model_store.store.session() as session:
        return repo.get_model_version(session=session, actor=ops(model_store), name="heart", version=version).artifact_sha256
