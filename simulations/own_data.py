"""A simulated federation of a consortium's own files.

Either a folder with one file per institution (CSV, Parquet or NPZ; the file's
name without its suffix is the institution's name), or one file split into
institutions by the values of a column (a hospital or region column). Every
file is read and validated as ``fedwarden client join`` reads an institution's
file (``client.contract.files.read_table``), so a simulation fails with the same
message, naming the file, the column and the row, that a real node would.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from client.contract.errors import DataError, SchemaError
from client.contract.files import FORMATS, read_raw, validate_file_frame
from client.contract.schema import TableSchema, load_schema
from client.data import InstitutionData, holdout_split, load_node_data
from privacy.errors import ConfigError

DATA_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq", ".npz")

SPLIT_BY_KEY = "split-by"
SPLIT_VALUE_KEY = "split-value"


@dataclass(frozen=True, kw_only=True)
class OwnData:
    """Where a consortium's rows are, and how they divide into institutions.

    Parameters
    ----------
    data : Path
        A folder of one file per institution, or (with ``split_by``) one file.
    schema_path : Path
        The consortium's schema (JSON), as every institution's node reads it.
    split_by : str | None
        Split the one file by this column's values, one institution per value.
    delimiter : str | None
        A CSV's delimiter; detected from the file when ``None``.
    """

    data: Path
    schema_path: Path
    split_by: str | None = None
    delimiter: str | None = None

    @property
    def schema(self) -> TableSchema:
        return _schema(self.schema_path)

    def files(self) -> dict[str, Path]:
        """Institution name to its file (a folder's files; one file under ``split_by``)."""
        if self.split_by is not None:
            if not self.data.is_file():
                raise ConfigError(f"--split-by needs one data file; {self.data} is not a file")
            return {self.data.stem: self.data}
        if not self.data.is_dir():
            raise ConfigError(
                f"--data {self.data} is not a folder; give a folder with one file per "
                "institution, or one file with --split-by COLUMN"
            )
        found: dict[str, Path] = {}
        for path in sorted(self.data.iterdir()):
            if not path.is_file() or path.suffix.lower() not in DATA_SUFFIXES:
                continue
            if path.stem in found:
                raise ConfigError(
                    f"two files name institution {path.stem!r}: {found[path.stem].name} and "
                    f"{path.name}",
                    institution=path.stem,
                )
            found[path.stem] = path
        if len(found) < 2:
            raise ConfigError(
                f"{self.data} holds {len(found)} data file(s); a federation needs >= 2 "
                f"institutions, one file each ({FORMATS})"
            )
        return found

    def institution_names(self) -> list[str]:
        if self.split_by is None:
            return sorted(self.files())
        return sorted(_split(self.data, self.schema_path, self.split_by, self.delimiter))

    def node_config(self, name: str) -> dict[str, Any]:
        """The node-config entries that tell a node where institution ``name``'s rows are."""
        config: dict[str, Any] = {
            "schema-path": str(self.schema_path.resolve()),
            "institution": name,
        }
        if self.delimiter:
            config["delimiter"] = self.delimiter
        if self.split_by is None:
            return config | {"data-path": str(self.files()[name].resolve())}
        return config | {
            "data-path": str(self.data.resolve()),
            SPLIT_BY_KEY: self.split_by,
            SPLIT_VALUE_KEY: name,
        }

    def check(self) -> dict[str, int]:
        """Read and validate every institution's rows now; their row counts by name."""
        counts = {}
        for name in self.institution_names():
            counts[name] = len(_validated(self.node_config(name)))
        return counts


def load_own_institution(node_config: Mapping[str, Any], *, seed: int) -> InstitutionData:
    """An institution's rows from the node config ``OwnData.node_config`` wrote."""
    if SPLIT_BY_KEY not in node_config:
        return load_node_data({**node_config, "seed": seed})
    name = str(node_config["institution"])
    return holdout_split(
        name, _validated(node_config), _schema(Path(node_config["schema-path"])), seed=seed
    )


def _validated(node_config: Mapping[str, Any]) -> pd.DataFrame:
    delimiter = node_config.get("delimiter")
    if SPLIT_BY_KEY not in node_config:
        from client.contract.files import read_table

        return read_table(
            Path(node_config["data-path"]),
            _schema(Path(node_config["schema-path"])),
            delimiter=str(delimiter) if delimiter else None,
        )
    parts = _split(
        Path(node_config["data-path"]),
        Path(node_config["schema-path"]),
        str(node_config[SPLIT_BY_KEY]),
        str(delimiter) if delimiter else None,
    )
    return parts[str(node_config[SPLIT_VALUE_KEY])]


@functools.lru_cache(maxsize=4)
def _schema(path: Path) -> TableSchema:
    return load_schema(path)


@functools.lru_cache(maxsize=2)
def _split(
    path: Path, schema_path: Path, column: str, delimiter: str | None
) -> dict[str, pd.DataFrame]:
    """One file's validated rows by the value of ``column``.

    The whole file is validated first, so an error names its row in the file.
    """
    schema = _schema(schema_path)
    raw = read_raw(path, schema, delimiter=delimiter)
    validate_file_frame(raw, schema, path=path)
    if column not in raw.columns:
        raise SchemaError(
            "is missing from the table: --split-by names no column of the file",
            column=column,
            prefix=f"{path}: ",
            path=str(path),
        )
    if raw[column].isna().any():
        row = int(raw[column].isna().to_numpy().nonzero()[0][0]) + 1
        raise SchemaError(
            f"missing value at row {row}: every row needs an institution to split by",
            column=column,
            prefix=f"{path}: ",
            row=row,
        )
    parts: dict[str, pd.DataFrame] = {}
    for value, rows in raw.groupby(raw[column].map(str), sort=True):
        where = f" ({column}={value})"
        parts[str(value)] = validate_file_frame(
            rows.reset_index(drop=True), schema, path=path, where=where
        )
    if len(parts) < 2:
        raise DataError(
            f"{path}: column {column!r} has {len(parts)} value(s); a federation needs >= 2 "
            "institutions",
            path=str(path),
        )
    return parts
