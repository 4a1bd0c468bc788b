from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from client.contract.errors import SchemaError
from client.contract.schema import TableSchema, canonical, load_schema, validate_frame


def test_valid_rows_come_back_typed_and_in_schema_order(small_schema, small_rows):
    shuffled = small_rows[["outcome", "smoker", "site", "dose", "age"]].assign(extra=1)

    out = validate_frame(shuffled, small_schema)

    assert list(out.columns) == ["age", "dose", "site", "smoker", "outcome"]
    assert out["age"].dtype == np.float64
    assert out["dose"].isna().sum() == (small_rows["dose"] == -1).sum() > 0
    assert set(out["outcome"]) == {"no", "yes"}
    assert set(out["smoker"].dropna()) <= {"True", "False"}


@pytest.mark.parametrize(
    ("mutate", "column", "phrase"),
    [
        (lambda f: f.drop(columns=["site"]), "site", "missing from the table"),
        (
            lambda f: f.assign(age=f["age"].astype(object).where(f.index != 4, "old")),
            "age",
            "non-numeric value 'old' at row 5",
        ),
        (
            lambda f: f.assign(age=f["age"].where(f.index != 9, 150.0)),
            "age",
            "outside the declared range [0, 120] (first at row 10: 150)",
        ),
        (
            lambda f: f.assign(age=f["age"].where(f.index != 2, np.inf)),
            "age",
            "infinite value at row 3",
        ),
        (
            lambda f: f.assign(age=f["age"].where(f.index != 7, np.nan)),
            "age",
            "missing value at row 8",
        ),
        (
            lambda f: f.assign(site=f["site"].where(f.index != 0, "z")),
            "site",
            "unknown category 'z' at row 1",
        ),
        (
            lambda f: f.assign(outcome=f["outcome"].where(f.index != 3, 7)),
            "outcome",
            "target value '7' at row 4",
        ),
        (
            lambda f: f.assign(outcome=f["outcome"].astype(float).where(f.index != 5, np.nan)),
            "outcome",
            "missing target at row 6",
        ),
    ],
)
def test_each_problem_is_named_with_its_column_and_row(
    small_schema, small_rows, mutate, column, phrase
):
    with pytest.raises(SchemaError) as caught:
        validate_frame(mutate(small_rows.copy()), small_schema)

    assert caught.value.column == column
    assert phrase in str(caught.value)
    assert str(caught.value).startswith(f"column {column!r}: ")


def test_an_empty_table_is_rejected(small_schema, small_rows):
    with pytest.raises(SchemaError, match="no rows"):
        validate_frame(small_rows.iloc[:0], small_schema)


def test_canonical_strings_match_across_csv_types():
    assert canonical(True) == "True"
    assert canonical(np.bool_(False)) == "False"
    assert canonical(3) == canonical(3.0) == canonical(np.int64(3)) == "3"
    assert canonical(2.5) == "2.5"
    assert canonical(" a ") == "a"


def test_schema_fingerprint_changes_with_content(small_schema):
    same = TableSchema.model_validate(small_schema.model_dump())
    changed = small_schema.model_copy(update={"name": "other"})

    assert same.fingerprint() == small_schema.fingerprint()
    assert changed.fingerprint() != small_schema.fingerprint()


def test_load_schema_names_the_invalid_place(tmp_path, small_schema):
    good = tmp_path / "good.json"
    good.write_text(small_schema.model_dump_json())
    bad_data = json.loads(small_schema.model_dump_json())
    bad_data["features"][0]["range"] = [5, 1]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(bad_data))

    assert load_schema(good) == small_schema
    with pytest.raises(SchemaError, match=r"is invalid at features\.0"):
        load_schema(bad)
    with pytest.raises(SchemaError, match="cannot read schema file"):
        load_schema(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "change",
    [
        {"features": []},
        {"features": [{"kind": "numeric", "name": "x", "range": [0, math.inf]}]},
        {"features": [{"kind": "categorical", "name": "x", "categories": ["a", "a"]}]},
        {"features": [{"kind": "numeric", "name": "outcome", "range": [0, 1]}]},
        {"image_shape": [3, 3]},
    ],
)
def test_impossible_schemas_are_refused(small_schema, change):
    data = json.loads(small_schema.model_dump_json())
    data.update(change)
    with pytest.raises(ValueError):
        TableSchema.model_validate(data)


def test_target_mapping_must_name_declared_labels(small_schema):
    data = json.loads(small_schema.model_dump_json())
    data["target"]["mapping"] = {"0": "no", "1": "maybe"}
    with pytest.raises(ValueError, match="unknown labels"):
        TableSchema.model_validate(data)


def test_bool_column_declared_numeric_is_refused(small_schema, small_rows):
    frame = small_rows.assign(age=True)
    with pytest.raises(SchemaError, match="declared numeric"):
        validate_frame(frame, small_schema)


def test_extra_columns_are_ignored(small_schema, small_rows):
    out = validate_frame(small_rows.assign(patient_id=range(len(small_rows))), small_schema)
    assert "patient_id" not in out
    assert isinstance(out, pd.DataFrame)


def _sensitive(schema: TableSchema) -> TableSchema:
    features = [
        f.model_copy(update={"sensitive": True}) if f.name in ("age", "site") else f
        for f in schema.features
    ]
    return schema.model_copy(update={"features": tuple(features)})


@pytest.mark.parametrize(
    ("column", "value", "shown"),
    [("age", 410, "410"), ("age", "old", "'old'"), ("site", "PATIENT-SITE-X", "'PATIENT-SITE-X'")],
)
def test_a_sensitive_columns_values_are_withheld_from_errors(
    small_schema, small_rows, column, value, shown
):
    frame = small_rows.astype({column: object})
    frame.loc[1, column] = value

    with pytest.raises(SchemaError) as plain:
        validate_frame(frame, small_schema)
    with pytest.raises(SchemaError) as withheld:
        validate_frame(frame, _sensitive(small_schema))

    assert shown in str(plain.value)
    assert shown not in str(withheld.value) and "withheld" in str(withheld.value)
    assert "row 2" in str(withheld.value) and column in str(withheld.value)


def test_the_flag_leaves_unflagged_fingerprints_alone(small_schema):
    data = json.loads(small_schema.model_dump_json())
    for feature in data["features"]:
        feature.pop("sensitive")
    legacy = TableSchema.model_validate(data)

    assert legacy.fingerprint() == small_schema.fingerprint()
    assert _sensitive(small_schema).fingerprint() != small_schema.fingerprint()


def test_a_sensitive_columns_values_are_masked_in_logs(small_schema, small_rows, caplog):
    import logging

    from privacy.redaction import install_log_redaction

    install_log_redaction()
    frame = small_rows.astype({"site": object})
    frame.loc[:, "site"] = "a"
    validate_frame(frame, _sensitive(small_schema))  # "a" is too short to mask; register longer
    schema = _sensitive(
        small_schema.model_copy(
            update={
                "features": tuple(
                    f.model_copy(update={"categories": ("ward-alpha", "b", "c")})
                    if f.name == "site"
                    else f
                    for f in small_schema.features
                )
            }
        )
    )
    frame.loc[:, "site"] = "ward-alpha"
    validate_frame(frame, schema)

    with caplog.at_level(logging.INFO):
        logging.getLogger("fedwarden.test").info("row from ward-alpha")

    assert "ward-alpha" not in caplog.text
