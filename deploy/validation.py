"""Prediction rows: checked against the schema and encoded for the model, in one pass.

Rows arrive as JSON objects by feature name. A row must hold every feature the
schema cannot do without, nothing the schema does not know, numbers that are
finite and within the declared range, and declared categories; ``null`` (or an
absent key) is allowed only for nullable features. Each problem is an
``InvalidRequestError`` (a 4xx) naming the row and the feature. What passes
becomes the model's two inputs: numeric values (NaN where missing) and
category indices (-1 where missing).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from client.contract.schema import CategoricalFeature, NumericFeature, TableSchema, canonical, shown
from deploy.errors import InvalidRequestError

if TYPE_CHECKING:
    from deploy.columns import ColumnEncoder

MISSING_CATEGORY = -1
_DICT = frozenset({dict})


@dataclass(frozen=True, kw_only=True)
class RequestLimits:
    """Bounds on one prediction request."""

    max_rows: int = 1024
    max_body_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.max_body_bytes < 64:
            raise ValueError("limits must allow at least one row and a minimal body")


UNLIMITED = RequestLimits(max_rows=2**31)


class RowEncoder:
    """Checks and encodes rows for one schema; built once per served model.

    Rows that are plain objects holding only known features are turned into
    columns and checked with the vectorised checks of ``deploy.columns`` (the
    same checks); only when those find a problem are the rows checked one by
    one, so the error names the first bad row and feature as always.
    """

    def __init__(self, schema: TableSchema, *, vectorised: bool = True) -> None:
        self.schema = schema
        self.known = frozenset(schema.feature_names)
        self.numeric = [f for f in schema.features if isinstance(f, NumericFeature)]
        self.categorical = [f for f in schema.features if isinstance(f, CategoricalFeature)]
        self.index = [{c: i for i, c in enumerate(f.categories)} for f in self.categorical]
        self.names = list(schema.feature_names)
        # One call takes a row's values in the schema's order (a tuple: two names at least).
        self._every = operator.itemgetter(*self.names) if len(self.names) > 1 else None
        self._columns: ColumnEncoder | None = None
        if vectorised:
            from deploy.columns import ColumnEncoder  # it builds on this module's checks

            self._columns = ColumnEncoder(schema)

    def encode(
        self, rows: Sequence[Any], *, limits: RequestLimits
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(numeric float32, categorical int64)`` for ``rows``; raise on the first problem."""
        if not rows:
            raise InvalidRequestError("rows: at least one row is needed")
        if len(rows) > limits.max_rows:
            raise InvalidRequestError(
                f"rows: {len(rows)} rows in one request; the limit is {limits.max_rows}",
                status_code=413,
            )
        columns = self._as_columns(rows) if self._columns is not None else None
        if self._columns is not None and columns is not None:
            try:  # the vectorised checks; a problem is located row by row below
                return self._columns.encode_known(columns, rows=len(rows))
            except InvalidRequestError:
                pass
        return self._row_by_row(rows)

    def _as_columns(self, rows: Sequence[Any]) -> dict[str, Sequence[Any]] | None:
        """The rows as one sequence per feature, if they are plain objects of known features
        (``None`` otherwise: then they are checked one by one)."""
        if set(map(type, rows)) != _DICT:
            return None
        if self._every is not None:
            try:  # every row holds every feature, and (by the count) nothing else
                table = list(zip(*map(self._every, rows), strict=True))
            except KeyError:
                pass
            else:
                if sum(map(len, rows)) == len(rows) * len(self.names):
                    return dict(zip(self.names, table, strict=True))
        if not all(self.known.issuperset(row) for row in rows):
            return None
        return {name: [row.get(name) for row in rows] for name in self.names}

    def _row_by_row(self, rows: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        numeric: list[list[float]] = []
        categorical: list[list[int]] = []
        for index, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise InvalidRequestError(f"rows[{index}]: expected an object of feature values")
            if not self.known.issuperset(row):
                unknown = sorted(set(row) - self.known)[0]
                raise InvalidRequestError(
                    f"rows[{index}]: unknown feature {unknown!r}", feature=unknown
                )
            numeric.append([self._number(index, f, row.get(f.name)) for f in self.numeric])
            categorical.append(
                [
                    self._category(index, j, f, row.get(f.name))
                    for j, f in enumerate(self.categorical)
                ]
            )
        return (
            np.asarray(numeric, dtype=np.float32).reshape(len(rows), len(self.numeric)),
            np.asarray(categorical, dtype=np.int64).reshape(len(rows), len(self.categorical)),
        )

    @staticmethod
    def _number(index: int, feature: NumericFeature, value: Any) -> float:
        if value is None:
            if not feature.nullable:
                raise InvalidRequestError(
                    f"rows[{index}].{feature.name}: missing, and this feature cannot be missing"
                )
            return math.nan
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRequestError(
                f"rows[{index}].{feature.name}: expected a number, got {type(value).__name__}"
            )
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float (a 1 and 400 zeros)
            raise InvalidRequestError(
                f"rows[{index}].{feature.name}: the number is too large to be a float"
            ) from None
        if not math.isfinite(number):
            raise InvalidRequestError(
                f"rows[{index}].{feature.name}: {value!r} is not a finite number"
            )
        if number in feature.missing_values:
            if not feature.nullable:
                raise InvalidRequestError(
                    f"rows[{index}].{feature.name}: {number:g} means missing, and this feature "
                    "cannot be missing"
                )
            return math.nan
        low, high = feature.range
        if not low <= number <= high:
            raise InvalidRequestError(
                f"rows[{index}].{feature.name}: {shown(feature, format(number, 'g'))} is outside "
                f"[{low:g}, {high:g}]"
            )
        return number

    def _category(self, index: int, position: int, feature: CategoricalFeature, value: Any) -> int:
        where = f"rows[{index}].{feature.name}"
        if value is None:
            if not feature.nullable:
                raise InvalidRequestError(f"{where}: missing, and this feature cannot be missing")
            return MISSING_CATEGORY
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidRequestError(f"{where}: {value!r} is not a category")
        if not isinstance(value, str | int | float | bool):
            raise InvalidRequestError(f"{where}: expected a category, got {type(value).__name__}")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63:
            raise InvalidRequestError(f"{where}: the number is too large to be a category")
        found = self.index[position].get(canonical(value))
        if found is None:
            expected = ", ".join(feature.categories)
            raise InvalidRequestError(
                f"{where}: unknown category {shown(feature, repr(value))}; expected one of "
                f"{expected}"
            )
        return found


def validate_rows(
    rows: Sequence[Any], schema: TableSchema, *, limits: RequestLimits
) -> list[Mapping[str, Any]]:
    """Return ``rows`` if every one fits ``schema``; raise ``InvalidRequestError`` otherwise."""
    RowEncoder(schema).encode(rows, limits=limits)
    return list(rows)
