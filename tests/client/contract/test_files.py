"""Reading an institution's file: delimiters, file-named errors, images in NPZ."""

from __future__ import annotations

import numpy as np
import pytest

from client.contract.errors import SchemaError
from client.contract.files import read_table, sniff_delimiter
from client.contract.schema import NumericFeature, TableSchema, TargetSpec


@pytest.mark.parametrize("sep", [",", ";", "\t", "|"])
def test_a_csv_reads_whatever_its_delimiter(tmp_path, small_schema, small_rows, sep):
    path = tmp_path / "rows.csv"
    small_rows.to_csv(path, index=False, sep=sep)

    table = read_table(path, small_schema)

    assert sniff_delimiter(path) == sep
    assert len(table) == len(small_rows)
    assert table["age"].tolist() == pytest.approx(small_rows["age"].tolist())


def test_a_wrong_delimiter_fails_with_a_hint(tmp_path, small_schema, small_rows):
    path = tmp_path / "rows.csv"
    small_rows.to_csv(path, index=False, sep=";")

    with pytest.raises(SchemaError) as caught:
        read_table(path, small_schema, delimiter=",")

    message = str(caught.value)
    assert str(path) in message and "'age'" in message
    assert "pass --delimiter ';'" in message


def test_a_bad_value_names_file_column_and_row(tmp_path, small_schema, small_rows):
    path = tmp_path / "Coimbra.csv"
    small_rows.loc[6, "age"] = 410
    small_rows.to_csv(path, index=False)

    with pytest.raises(SchemaError) as caught:
        read_table(path, small_schema)

    assert str(caught.value).startswith(f"{path}: column 'age': ")
    assert "row 7: 410" in str(caught.value)
    assert caught.value.context["path"] == str(path)


def test_npz_images_of_the_schema_shape_read_as_rows(tmp_path):
    schema = TableSchema(
        name="tiny-images",
        features=tuple(NumericFeature(name=f"p{i}", range=(0, 255)) for i in range(6)),
        target=TargetSpec(name="label", labels=("0", "1")),
        image_shape=(2, 3),
    )
    images = np.arange(4 * 6, dtype=np.uint8).reshape(4, 2, 3)
    np.savez(tmp_path / "images.npz", X=images, y=np.array([0, 1, 0, 1]))

    table = read_table(tmp_path / "images.npz", schema)

    assert table.shape == (4, 7)
    assert table.iloc[1, :6].tolist() == list(range(6, 12))


def test_npz_images_of_another_shape_are_refused(tmp_path):
    schema = TableSchema(
        name="tiny-images",
        features=tuple(NumericFeature(name=f"p{i}", range=(0, 255)) for i in range(6)),
        target=TargetSpec(name="label", labels=("0", "1")),
        image_shape=(2, 3),
    )
    np.savez(tmp_path / "images.npz", X=np.zeros((4, 3, 2)), y=np.array([0, 1, 0, 1]))

    with pytest.raises(SchemaError, match=r"images of shape \(3, 2\)"):
        read_table(tmp_path / "images.npz", schema)
