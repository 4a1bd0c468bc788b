from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from client.contract.plan import TrainingPlan
from client.contract.preprocessing import PreprocessingSpec
from client.models import build_model, get_weights
from deploy import onnx_export
from deploy.errors import ExportError
from deploy.onnx_export import check_parity, export_model, export_onnx, sample_rows, serving_module
from deploy.serving_model import encode_rows, frame_to_rows
from simulations.scenario import Scenario


def federation(dataset: str) -> tuple[PreprocessingSpec, pd.DataFrame, pd.DataFrame]:
    data = Scenario(dataset=dataset).all_institutions()
    train = pd.concat([d.train for d in data], ignore_index=True)
    test = pd.concat([d.test for d in data], ignore_index=True)
    return PreprocessingSpec.fit(train, data[0].schema), train, test


@pytest.fixture(scope="module")
def heart():
    return federation("heart-disease")


def test_the_serving_graph_equals_the_training_path_on_real_rows(heart):
    spec, _, test = heart
    model_spec = TrainingPlan(model="mlp").model_spec(spec)
    module = serving_module(get_weights(build_model(model_spec, seed=3)), model_spec, spec)
    numeric, categorical = encode_rows(frame_to_rows(test, spec), spec)

    with torch.no_grad():
        served = module(torch.as_tensor(numeric), torch.as_tensor(categorical)).numpy()
        trained = torch.softmax(module.model(torch.as_tensor(spec.transform(test))), dim=1).numpy()

    # Switzerland's cholesterol is declared missing (0): the graph sees NaN and imputes like training
    assert np.isnan(numeric).any() and (categorical == -1).any()
    np.testing.assert_allclose(served, trained, atol=1e-6)


@pytest.mark.parametrize(
    ("dataset", "model"), [("heart-disease", "logreg"), ("heart-disease", "mlp"), ("digits", "cnn")]
)
def test_exported_artifacts_match_pytorch_and_take_any_batch(tmp_path, dataset, model):
    spec, _, test = federation(dataset)
    model_spec = TrainingPlan(model=model).model_spec(spec)
    weights = get_weights(build_model(model_spec, seed=1))

    exported = export_model(
        weights=weights,
        model_spec=model_spec,
        preprocessing=spec,
        path=tmp_path / "m.onnx",
        held_out=test,
    )

    assert exported.parity.passed and exported.parity.rows == 512 + len(test)
    assert exported.parity.max_abs_diff <= 1e-5
    assert len(exported.sha256) == 64
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    for batch in (1, 300):
        numeric, categorical = encode_rows(
            frame_to_rows(sample_rows(spec, count=batch, seed=2), spec), spec
        )
        (probabilities,) = session.run(None, {"numeric": numeric, "categorical": categorical})
        assert probabilities.shape == (batch, len(spec.schema.target.labels))
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_a_mismatched_artifact_is_caught(tmp_path, heart):
    spec, _, test = heart
    model_spec = TrainingPlan(model="logreg").model_spec(spec)
    first = serving_module(get_weights(build_model(model_spec, seed=1)), model_spec, spec)
    other = serving_module(get_weights(build_model(model_spec, seed=2)), model_spec, spec)
    path = tmp_path / "first.onnx"
    export_onnx(first, path)

    report = check_parity(path, other, spec, test)

    assert not report.passed and report.max_abs_diff > 1e-3


def test_a_failed_parity_check_refuses_and_deletes_the_artifact(tmp_path, heart, monkeypatch):
    spec, _, _ = heart
    model_spec = TrainingPlan(model="logreg").model_spec(spec)
    monkeypatch.setattr(onnx_export, "PARITY_TOLERANCE", -1.0)  # nothing can pass

    with pytest.raises(ExportError, match="refusing to register it"):
        export_model(
            weights=get_weights(build_model(model_spec, seed=1)),
            model_spec=model_spec,
            preprocessing=spec,
            path=tmp_path / "bad.onnx",
        )
    assert not (tmp_path / "bad.onnx").exists()


def test_schema_sampled_rows_cover_ranges_categories_and_missing(heart):
    spec, _, _ = heart
    rows = sample_rows(spec, count=400, seed=0)

    assert rows["age"].min() == 0 and rows["age"].max() == 120
    assert set(rows["cp"]) == set(spec.schema.features[2].categories)
    assert rows["chol"].isna().any() and rows["thal"].isna().any()
