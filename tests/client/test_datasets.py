from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from client.contract.errors import DataError, SchemaError
from client.datasets import DATASETS, FileSource, get_dataset, read_table
from privacy.errors import UnknownNameError


def test_heart_disease_is_four_real_hospitals():
    source = get_dataset("heart-disease")

    hospitals = source.institutions()

    assert sorted(hospitals) == ["Cleveland", "Hungary", "Switzerland", "VA Long Beach"]
    assert {k: len(v) for k, v in hospitals.items()} == {
        "Cleveland": 304,
        "Hungary": 293,
        "Switzerland": 123,
        "VA Long Beach": 200,
    }
    # Switzerland records every cholesterol as 0: the schema declares 0 as missing.
    assert hospitals["Switzerland"]["chol"].isna().all()
    assert set(hospitals["Cleveland"]["num"]) == {"no disease", "disease"}


@pytest.mark.parametrize(
    ("name", "rows", "classes"), [("breast-cancer", 569, 2), ("digits", 1797, 10), ("wine", 178, 3)]
)
def test_sklearn_sets_load_offline_and_validate(name, rows, classes):
    source = get_dataset(name)

    table = source.load()

    assert len(table) == rows
    assert table[source.schema.target.name].nunique() == classes
    assert source.institutions() is None


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(UnknownNameError) as caught:
        get_dataset("mnist")
    assert "unknown dataset 'mnist'" in str(caught.value)
    for name in DATASETS:
        assert name in str(caught.value)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".npz"])
def test_institution_files_are_read_and_checked(tmp_path, small_schema, small_rows, suffix):
    path = tmp_path / f"rows{suffix}"
    if suffix == ".csv":
        small_rows.to_csv(path, index=False)
    elif suffix == ".parquet":
        small_rows.to_parquet(path)
    else:
        np.savez(
            path,
            **{
                c: small_rows[c].to_numpy(dtype=float if c in ("age", "dose", "outcome") else str)
                for c in ["age", "dose", "site", "outcome"]
            },
            smoker=np.array(["True"] * len(small_rows)),
        )

    table = read_table(path, small_schema)

    assert len(table) == len(small_rows)
    assert table["age"].tolist() == pytest.approx(small_rows["age"].tolist())


def test_npz_with_x_and_y_uses_the_schema_order(tmp_path):
    source = get_dataset("digits")
    table = source.load()
    x = table[source.schema.feature_names].to_numpy()
    path = tmp_path / "digits.npz"
    np.savez(path, X=x[:50], y=np.asarray([int(v) for v in table["target"][:50]]))

    loaded = read_table(path, source.schema)

    assert len(loaded) == 50
    with pytest.raises(SchemaError, match=r"array X has shape \(50, 3\)"):
        np.savez(path, X=x[:50, :3], y=np.zeros(50))
        read_table(path, source.schema)


def test_malformed_and_missing_files_get_clear_errors(tmp_path, small_schema):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="cannot read data file"):
        read_table(broken, small_schema)
    with pytest.raises(DataError, match="does not exist"):
        read_table(tmp_path / "nope.csv", small_schema)
    odd = tmp_path / "rows.xlsx"
    odd.write_text("x")
    with pytest.raises(DataError, match="unsupported type"):
        read_table(odd, small_schema)


def test_a_csv_that_breaks_the_schema_names_the_column(tmp_path, small_schema, small_rows):
    path = tmp_path / "rows.csv"
    small_rows.assign(site="d").to_csv(path, index=False)
    with pytest.raises(SchemaError, match="column 'site': unknown category 'd' at row 1"):
        read_table(path, small_schema)


def test_file_source_reads_schema_and_rows(tmp_path, small_schema, small_rows):
    (tmp_path / "schema.json").write_text(small_schema.model_dump_json())
    small_rows.to_csv(tmp_path / "rows.csv", index=False)

    source = FileSource(tmp_path / "rows.csv", tmp_path / "schema.json")

    assert source.schema == small_schema
    assert isinstance(source.load(), pd.DataFrame)
