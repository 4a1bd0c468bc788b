from __future__ import annotations

import random

import numpy as np
import pytest

from client.datasets import get_dataset
from deploy.columns import ColumnEncoder
from deploy.errors import InvalidRequestError
from deploy.validation import RequestLimits, RowEncoder

SCHEMA = get_dataset("heart-disease").schema
ROW = {"age": 63, "sex": "Male", "cp": "typical angina", "trestbps": 145, "chol": 233, "fbs": True,
       "restecg": "lv hypertrophy", "thalch": 150, "exang": "False", "oldpeak": 2.3,
       "slope": "downsloping", "ca": 0, "thal": "fixed defect"}
ODD_VALUES = [None, 0, -1, 1e9, float("inf"), float("nan"), True, "Male", "x", " Male ", [1],
              2**70, 10**400, 3.5, "typical angina", "1", "True", 121, 0.0, "normal"]


@pytest.mark.parametrize("seed", range(60))
def test_columns_are_checked_and_encoded_as_the_same_rows_one_by_one(seed):
    draw = random.Random(seed)
    rows = []
    for _ in range(draw.randint(1, 6)):
        row = dict(ROW)
        for _ in range(draw.randint(0, 2)):
            row[draw.choice(list(ROW))] = draw.choice(ODD_VALUES)
        rows.append(row)
    columns = {name: [row[name] for row in rows] for name in ROW}
    limits = RequestLimits()

    def outcome(encode):
        try:
            return encode()
        except InvalidRequestError as exc:
            return exc

    by_rows = outcome(lambda: RowEncoder(SCHEMA, vectorised=False).encode(rows, limits=limits))
    by_columns = outcome(lambda: ColumnEncoder(SCHEMA).encode(columns, limits=limits))

    if isinstance(by_rows, InvalidRequestError):
        assert isinstance(by_columns, InvalidRequestError)
        assert by_columns.status_code == 422 and str(by_columns).startswith("columns.")
    else:
        assert not isinstance(by_columns, InvalidRequestError), by_columns
        for got, expected in zip(by_columns, by_rows, strict=True):
            np.testing.assert_array_equal(got, expected)
            assert got.dtype == expected.dtype and got.flags["C_CONTIGUOUS"]


def test_the_error_names_the_column_and_the_row_of_the_first_problem():
    columns = {name: [value] * 5 for name, value in ROW.items()}
    columns["chol"] = [233, 233, 0, 800, 233]  # 0 means missing: allowed; 800 is not
    columns["cp"] = ["typical angina"] * 4 + ["sharp"]

    with pytest.raises(InvalidRequestError) as caught:
        ColumnEncoder(SCHEMA).encode(columns, limits=RequestLimits())

    assert str(caught.value) == "columns.chol[3]: 800 is outside [50, 700]"


def test_nan_is_refused_even_where_the_feature_may_be_missing():
    # "ca" may be missing (null), but NaN is not null: both paths refuse it, naming the row
    columns = {name: [value] * 3 for name, value in ROW.items()}
    columns["ca"] = [0, None, float("nan")]

    with pytest.raises(InvalidRequestError, match=r"columns\.ca\[2\]: nan is not a finite number"):
        ColumnEncoder(SCHEMA).encode(columns, limits=RequestLimits())
    rows = [dict(ROW, ca=value) for value in columns["ca"]]
    with pytest.raises(InvalidRequestError, match="is not a finite number"):
        RowEncoder(SCHEMA).encode(rows, limits=RequestLimits())
