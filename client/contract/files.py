"""Reading an institution's file as institutions have them: CSV, Parquet or NPZ.

A CSV's delimiter is detected from its first lines (comma, semicolon, tab or
pipe: semicolon-separated files are common in much of Europe) unless given.
Every problem raises ``DataError``/``SchemaError`` naming the file, and for a
schema mismatch the column and first offending row as ``validate_frame`` does.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from client.contract.errors import DataError, SchemaError
from client.contract.schema import TableSchema, validate_frame

logger = logging.getLogger(__name__)

FORMATS = "CSV (any of , ; tab | as delimiter), Parquet or NPZ"
"""What ``read_table`` accepts, in the words every command's help uses."""

_DELIMITERS = ",;\t|"
_SNIFF_BYTES = 64 * 1024


def sniff_delimiter(path: Path) -> str:
    """The delimiter of a CSV file, from its first lines; ``,`` when they do not tell."""
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        sample = handle.read(_SNIFF_BYTES)
    header = sample.splitlines()[0] if sample else ""
    # The header alone is the most reliable witness: a name rarely holds a delimiter.
    counts = {d: header.count(d) for d in _DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    if counts[best] > 0 and sum(1 for c in counts.values() if c > 0) == 1:
        return best
    try:
        return csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        return best if counts[best] > 0 else ","


def read_raw(
    path: str | Path, schema: TableSchema, *, delimiter: str | None = None
) -> pd.DataFrame:
    """The file's rows as a table, unvalidated (columns as the file names them)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist", path=str(path))
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".txt", ".tsv"):
            sep = delimiter or sniff_delimiter(path)
            frame = pd.read_csv(path, sep=sep)
            logger.info("read %s with delimiter %r", path, sep)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif suffix == ".npz":
            frame = _read_npz(path, schema)
        else:
            raise DataError(
                f"data file {path} has an unsupported type {suffix!r}; use {FORMATS}",
                path=str(path),
            )
    except (DataError, SchemaError):
        raise
    except Exception as exc:  # pandas and pyarrow raise many types for a malformed file
        raise DataError(f"cannot read data file {path}: {exc}", path=str(path)) from exc
    logger.info("read %d rows from %s", len(frame), path)
    return frame


def read_table(
    path: str | Path, schema: TableSchema, *, delimiter: str | None = None
) -> pd.DataFrame:
    """Read an institution's file and check it against ``schema``.

    NPZ files hold either one array per column name, or ``X`` (features in the
    schema's order, or images of the schema's shape) and ``y`` (the target).
    """
    path = Path(path)
    frame = read_raw(path, schema, delimiter=delimiter)
    return validate_file_frame(frame, schema, path=path)


def validate_file_frame(
    frame: pd.DataFrame, schema: TableSchema, *, path: Path, where: str = ""
) -> pd.DataFrame:
    """``validate_frame``, with the file (and ``where`` in it) named in any error."""
    try:
        return validate_frame(frame, schema)
    except SchemaError as exc:
        hint = _delimiter_hint(frame, schema) if exc.problem == "is missing from the table" else ""
        context = {k: v for k, v in exc.context.items() if k not in ("column", "prefix")}
        raise SchemaError(
            f"{exc.problem}{hint}",
            column=exc.column,
            prefix=f"{path}{where}: ",
            **{**context, "path": str(path)},
        ) from exc


def _delimiter_hint(frame: pd.DataFrame, schema: TableSchema) -> str:
    """A hint when the columns look like one line that was not split on its delimiter."""
    for column in map(str, frame.columns):
        for sep in _DELIMITERS:
            names = column.split(sep)
            if len(names) > 1 and any(n.strip() in schema.feature_names for n in names):
                shown = "\\t" if sep == "\t" else sep
                return (
                    f" (the file seems separated by {shown!r}, not split as such: "
                    f"pass --delimiter '{shown}')"
                )
    return ""


def _read_npz(path: Path, schema: TableSchema) -> pd.DataFrame:
    with np.load(path, allow_pickle=False) as arrays:
        if "X" in arrays and "y" in arrays:
            features = arrays["X"]
            if features.ndim > 2 and schema.image_shape is not None:
                if tuple(features.shape[1:]) != tuple(schema.image_shape):
                    raise SchemaError(
                        f"array X holds images of shape {features.shape[1:]}; the schema "
                        f"declares {tuple(schema.image_shape)}"
                    )
                features = features.reshape(features.shape[0], -1)
            if features.ndim != 2 or features.shape[1] != len(schema.features):
                raise SchemaError(
                    f"array X has shape {features.shape}; the schema declares "
                    f"{len(schema.features)} features"
                )
            frame = pd.DataFrame(features, columns=schema.feature_names)
            frame[schema.target.name] = arrays["y"]
            return frame
        return pd.DataFrame({name: arrays[name] for name in arrays.files})
