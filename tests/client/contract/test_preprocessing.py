from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from client.contract.errors import DataError
from client.contract.preprocessing import PreprocessingSpec, summarize, summary_size
from client.contract.schema import validate_frame
from client.datasets import get_dataset


def test_summary_entries_are_shares_in_unit_interval(small_schema, small_rows):
    frame = validate_frame(small_rows, small_schema)

    summary = summarize(frame, small_schema)

    assert summary.shape == (summary_size(small_schema),)
    assert summary.min() >= 0 and summary.max() <= 1
    # numerics only (what the scaling uses): nothing about categories or labels leaves
    assert summary.shape == (3 * 2,)


def test_weighted_federated_summaries_equal_the_pooled_summary(small_schema, small_rows):
    frame = validate_frame(small_rows, small_schema)
    parts = [frame.iloc[:50], frame.iloc[50:170], frame.iloc[170:]]

    federated = sum(summarize(p, small_schema) * len(p) for p in parts) / len(frame)

    np.testing.assert_allclose(federated, summarize(frame, small_schema), atol=1e-12)
    spec = PreprocessingSpec.from_summary(small_schema, federated)
    pooled = PreprocessingSpec.fit(frame, small_schema)
    for name, scale in pooled.scaling.items():
        assert spec.scaling[name].mean == pytest.approx(scale.mean)
        assert spec.scaling[name].std == pytest.approx(scale.std)


def test_transform_standardises_numerics_and_one_hots_categories(small_schema, small_rows):
    frame = validate_frame(small_rows, small_schema)
    spec = PreprocessingSpec.fit(frame, small_schema)

    x = spec.transform(frame)

    names = spec.output_names
    assert x.shape == (len(frame), len(names)) and x.dtype == np.float32
    assert names == [
        "age",
        "dose",
        "dose:missing",
        "site=a",
        "site=b",
        "site=c",
        "smoker=True",
        "smoker=False",
        "smoker:missing",
    ]
    age = x[:, names.index("age")]
    assert age.mean() == pytest.approx(0.0, abs=1e-5) and age.std() == pytest.approx(1.0, abs=1e-3)
    missing = frame["dose"].isna().to_numpy()
    assert (x[missing, names.index("dose")] == 0).all()
    assert (x[:, names.index("dose:missing")] == missing).all()
    assert (x[:, 3:6].sum(axis=1) == 1).all()
    assert spec.labels(frame).tolist() == [0 if v == "no" else 1 for v in frame["outcome"]]


def test_spec_round_trips_through_json(small_schema, small_rows):
    spec = PreprocessingSpec.fit(validate_frame(small_rows, small_schema), small_schema)

    again = PreprocessingSpec.from_json(spec.to_json())

    assert again == spec
    frame = validate_frame(small_rows.head(20), small_schema)
    np.testing.assert_array_equal(again.transform(frame), spec.transform(frame))


def test_a_summary_of_the_wrong_size_or_with_nan_is_refused(small_schema):
    with pytest.raises(DataError, match="summary has shape"):
        PreprocessingSpec.from_summary(small_schema, np.zeros(3))
    bad = np.full(summary_size(small_schema), 0.5)
    bad[0] = np.nan
    with pytest.raises(DataError):
        PreprocessingSpec.from_summary(small_schema, bad)


def test_constant_features_do_not_divide_by_zero():
    source = get_dataset("digits")
    table = source.load()

    spec = PreprocessingSpec.fit(table, source.schema)
    x = spec.transform(table)

    assert np.isfinite(x).all()
    assert spec.scaling["pixel_0_0"].std == 1.0  # always blank: no spread


def test_a_feature_no_institution_observed_gets_a_neutral_scale(small_schema, small_rows):
    frame = validate_frame(small_rows, small_schema).assign(dose=np.nan)
    spec = PreprocessingSpec.fit(frame, small_schema)
    assert spec.scaling["dose"].mean == 0.5 and spec.scaling["dose"].std == 1.0
    assert isinstance(frame, pd.DataFrame)


def test_numeric_only_rows_take_the_array_path_with_the_same_result(monkeypatch):
    """Images (784 never-missing numerics) transform in one array operation, not per column."""

    source = get_dataset("digits")
    rows = source.load().iloc[:50]
    spec = PreprocessingSpec.fit(rows, source.schema)

    fast = spec.transform(rows)
    monkeypatch.setattr(PreprocessingSpec, "_all_plain_numeric", lambda self: False)
    general = spec.transform(rows)

    assert fast.dtype == general.dtype == np.float32
    np.testing.assert_allclose(fast, general, rtol=0, atol=1e-6)
