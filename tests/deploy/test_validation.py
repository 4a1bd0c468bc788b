from __future__ import annotations

import math

import pytest

from client.datasets import get_dataset
from deploy.errors import InvalidRequestError
from deploy.validation import RequestLimits, validate_rows

SCHEMA = get_dataset("heart-disease").schema
LIMITS = RequestLimits(max_rows=4)
ROW = {"age": 63, "sex": "Male", "cp": "typical angina", "trestbps": 145, "chol": 233, "fbs": True,
       "restecg": "lv hypertrophy", "thalch": 150, "exang": "False", "oldpeak": 2.3,
       "slope": "downsloping", "ca": 0, "thal": "fixed defect"}


def test_a_valid_row_passes_and_nullable_features_may_be_null_or_absent():
    sparse = {k: v for k, v in ROW.items() if k not in ("ca", "thal")} | {"chol": None}
    assert validate_rows([ROW, sparse], SCHEMA, limits=LIMITS) == [ROW, sparse]


def test_declared_missing_values_count_as_missing():
    assert validate_rows([{**ROW, "chol": 0}], SCHEMA, limits=LIMITS)  # 0 means "not measured"


@pytest.mark.parametrize(
    ("row", "status", "phrase"),
    [
        ({**ROW, "bmi": 22}, 422, "rows[0]: unknown feature 'bmi'"),
        ({k: v for k, v in ROW.items() if k != "age"}, 422, "rows[0].age: missing"),
        ({**ROW, "age": math.nan}, 422, "rows[0].age: nan is not a finite number"),
        ({**ROW, "oldpeak": math.inf}, 422, "rows[0].oldpeak: inf is not a finite number"),
        ({**ROW, "age": "63"}, 422, "rows[0].age: expected a number, got str"),
        ({**ROW, "thalch": 300}, 422, "rows[0].thalch: 300 is outside [40, 250]"),
        ({**ROW, "thal": "broken"}, 422, "rows[0].thal: unknown category 'broken'"),
        ({**ROW, "sex": ["Male"]}, 422, "rows[0].sex: expected a category, got list"),
        ({**ROW, "cp": math.nan}, 422, "rows[0].cp: nan is not a category"),
    ],
)
def test_each_problem_is_named(row, status, phrase):
    with pytest.raises(InvalidRequestError) as caught:
        validate_rows([row], SCHEMA, limits=LIMITS)
    assert caught.value.status_code == status and phrase in str(caught.value)


def test_the_row_index_is_the_offending_one():
    with pytest.raises(InvalidRequestError, match=r"rows\[2\]\.age"):
        validate_rows([ROW, ROW, {**ROW, "age": -1}], SCHEMA, limits=LIMITS)


def test_too_many_rows_is_413_and_no_rows_422():
    with pytest.raises(InvalidRequestError) as many:
        validate_rows([ROW] * 5, SCHEMA, limits=LIMITS)
    with pytest.raises(InvalidRequestError) as none:
        validate_rows([], SCHEMA, limits=LIMITS)
    assert many.value.status_code == 413 and none.value.status_code == 422


def test_a_sensitive_features_value_is_not_echoed_in_the_error():
    features = tuple(
        f.model_copy(update={"sensitive": True}) if f.name in ("thalch", "thal") else f
        for f in SCHEMA.features
    )
    schema = SCHEMA.model_copy(update={"features": features})

    for row, hidden in (({**ROW, "thalch": 300}, "300"), ({**ROW, "thal": "broken"}, "broken")):
        with pytest.raises(InvalidRequestError) as caught:
            validate_rows([row], schema, limits=LIMITS)
        assert hidden not in str(caught.value) and "withheld" in str(caught.value)


ODD_VALUES = [None, 0, -1, 1e9, float("nan"), float("inf"), True, "Male", "x", " Male ", [1], 2**70,
              3.5, "typical angina", "1"]


@pytest.mark.parametrize("seed", range(40))
def test_the_vectorised_row_path_answers_as_the_row_by_row_path(seed):
    import random

    import numpy as np

    from deploy.validation import RowEncoder

    draw = random.Random(seed)
    rows = []
    for _ in range(draw.randint(1, 6)):
        row = dict(ROW)
        for _ in range(draw.randint(0, 2)):
            row[draw.choice(list(ROW))] = draw.choice(ODD_VALUES)
        if draw.random() < 0.2:
            row.pop(draw.choice(list(ROW)))
        rows.append(row)
    fast, slow = RowEncoder(SCHEMA), RowEncoder(SCHEMA, vectorised=False)
    limits = RequestLimits()

    def outcome(encoder):
        try:
            return encoder.encode(rows, limits=limits)
        except InvalidRequestError as exc:
            return str(exc)

    expected, got = outcome(slow), outcome(fast)
    if isinstance(expected, str):
        assert got == expected
    else:
        assert not isinstance(got, str), got
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
        assert (got[0].dtype, got[1].dtype) == (expected[0].dtype, expected[1].dtype)
