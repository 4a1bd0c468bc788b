"""Columnar prediction requests: one list per feature, checked with vectorised numpy.

``{"columns": {"age": [63, 41], "sex": ["Male", "Female"], ...}}`` carries the
same rows as the row format, without repeating every feature name per row. The
checks are the row format's (``deploy.validation``), done a column at a time:
an unknown or missing column, columns of different lengths, a value that is
not a number (or not a category), not finite, outside the declared range, or
missing where the feature cannot be. Each error names the column and the row
of the first problem: ``columns.age[3]: 410 is outside [0, 120]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np

from client.contract.schema import CategoricalFeature, NumericFeature, TableSchema, canonical
from deploy.errors import InvalidRequestError
from deploy.validation import MISSING_CATEGORY, RequestLimits

_NUMBER_TYPES = frozenset({int, float, type(None)})
_CATEGORY_TYPES = frozenset({str, int, float, bool, type(None)})


class ColumnEncoder:
    """Checks and encodes columnar batches for one schema; built once per served model."""

    def __init__(self, schema: TableSchema) -> None:
        self.schema = schema
        self.known = frozenset(schema.feature_names)
        self.numeric = [f for f in schema.features if isinstance(f, NumericFeature)]
        self.categorical = [f for f in schema.features if isinstance(f, CategoricalFeature)]
        self.index: list[dict[Any, int]] = []
        for feature in self.categorical:
            lookup: dict[Any, int] = {c: i for i, c in enumerate(feature.categories)}
            self.index.append(lookup)
        # The one-step lookup: a declared category, or null where the feature may be missing.
        self._lookup = [
            lookup | {None: MISSING_CATEGORY} if feature.nullable else lookup
            for feature, lookup in zip(self.categorical, self.index, strict=True)
        ]
        self._numeric_names = [f.name for f in self.numeric]
        self._categorical_names = [f.name for f in self.categorical]
        self._codes = [np.array(sorted(f.missing_values), dtype=np.float64) for f in self.numeric]
        self._low = np.array([f.range[0] for f in self.numeric], dtype=np.float64)[:, None]
        self._high = np.array([f.range[1] for f in self.numeric], dtype=np.float64)[:, None]
        self._required = np.array([not f.nullable for f in self.numeric], dtype=bool)[:, None]
        # Missing-value codes as columns (one per code slot, NaN where a feature has fewer):
        # ``x == slot`` finds them all at once. Ranges are finite, so an infinite value falls
        # outside; a non-finite code would break that, and then only the slow path is used.
        slots = max((len(codes) for codes in self._codes), default=0)
        self._code_slots = [
            np.array([c[k] if k < len(c) else np.nan for c in self._codes])[:, None]
            for k in range(slots)
        ]
        self._vectorised = all(np.isfinite(c).all() for c in self._codes)

    def encode(self, columns: Any, *, limits: RequestLimits) -> tuple[np.ndarray, np.ndarray]:
        """``(numeric float32, categorical int64)``; raise on the first problem."""
        if not isinstance(columns, Mapping) or not columns:
            raise InvalidRequestError("columns: expected an object of feature columns")
        unknown = sorted(set(columns) - self.known)
        if unknown:
            raise InvalidRequestError(
                f"columns: unknown feature {unknown[0]!r}", feature=unknown[0]
            )
        rows = self._rows(columns, limits)
        return self.encode_known(columns, rows=rows)

    def encode_known(
        self, columns: Mapping[str, Sequence[Any]], *, rows: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``encode`` for columns already known to be lists (or tuples) of ``rows`` values,
        each of a known feature: the row path's batches, turned into columns."""
        return self._all_numbers(columns, rows), self._all_categories(columns, rows)

    @staticmethod
    def _rows(columns: Mapping[str, Any], limits: RequestLimits) -> int:
        lengths = {}
        for name, values in columns.items():
            if not isinstance(values, list):
                raise InvalidRequestError(f"columns.{name}: expected a list of values")
            lengths[name] = len(values)
        rows = max(lengths.values())
        if rows == 0:
            raise InvalidRequestError("columns: at least one row is needed")
        if rows > limits.max_rows:
            raise InvalidRequestError(
                f"columns: {rows} rows in one request; the limit is {limits.max_rows}",
                status_code=413,
            )
        for name, length in lengths.items():
            if length != rows:
                raise InvalidRequestError(
                    f"columns.{name}: {length} values, but other columns have {rows}"
                )
        return rows

    def _all_numbers(self, columns: Mapping[str, Any], rows: int) -> np.ndarray:
        """Every numeric column checked at once; a problem is located column by column."""
        if not self.numeric:
            return np.empty((rows, 0), dtype=np.float32)
        values = [columns.get(name) for name in self._numeric_names]
        if (
            not self._vectorised
            or None in values
            or not _NUMBER_TYPES.issuperset(map(type, chain.from_iterable(values)))  # type: ignore[arg-type]
        ):
            return self._column_by_column(columns, rows)
        try:
            x = np.array(values, dtype=np.float64)  # (features, rows); None becomes NaN
        except OverflowError:
            return self._column_by_column(columns, rows)
        # None is missing, and becomes NaN; a NaN the caller sent is not a number at all,
        # and the column-by-column checks refuse it ("is not a finite number").
        if int(np.isnan(x).sum()) != sum(v.count(None) for v in values):  # type: ignore[union-attr]
            return self._column_by_column(columns, rows)
        for slot in self._code_slots:
            x[x == slot] = np.nan  # a missing-value code is missing
        # NaN (missing) compares false, so only present values can fall outside the range;
        # an infinite one always does. Missing is a problem only where it is not allowed.
        bad = (x < self._low) | (x > self._high) | (np.isnan(x) & self._required)
        if bad.any():
            return self._column_by_column(columns, rows)
        return np.ascontiguousarray(x.T, dtype=np.float32)

    def _all_categories(self, columns: Mapping[str, Any], rows: int) -> np.ndarray:
        """Each categorical column's codes, in one step where every value is a declared
        category as it is; else (null, a number, a stray value) as ``_categories`` does."""
        codes = np.empty((len(self.categorical), rows), dtype=np.int64)
        for j, (name, lookup) in enumerate(zip(self._categorical_names, self._lookup, strict=True)):
            values = columns.get(name)
            try:  # a value not found (None), a missing column, an unhashable value: TypeError
                codes[j] = np.fromiter(map(lookup.get, values), dtype=np.int64, count=rows)  # type: ignore[arg-type]
            except TypeError:
                codes[j] = self._categories(self.categorical[j], self.index[j], values, rows)
        return np.ascontiguousarray(codes.T)

    def _column_by_column(self, columns: Mapping[str, Any], rows: int) -> np.ndarray:
        numeric = np.empty((rows, len(self.numeric)), dtype=np.float32)
        for j, feature in enumerate(self.numeric):
            numeric[:, j] = self._numbers(feature, self._codes[j], columns.get(feature.name), rows)
        return numeric

    @staticmethod
    def _numbers(
        feature: NumericFeature, codes: np.ndarray, values: Sequence[Any] | None, rows: int
    ) -> np.ndarray:
        name = feature.name
        if values is None:
            if not feature.nullable:
                raise InvalidRequestError(
                    f"columns.{name}: missing, and this feature cannot be missing", feature=name
                )
            return np.full(rows, np.nan)
        if not _NUMBER_TYPES.issuperset(map(type, values)):
            row = next(
                i for i, v in enumerate(values) if isinstance(v, bool) or type(v) not in
                _NUMBER_TYPES
            )  # fmt: skip
            raise InvalidRequestError(
                f"columns.{name}[{row}]: expected a number, got {type(values[row]).__name__}",
                feature=name,
            )
        try:
            x = np.array(values, dtype=np.float64)  # None becomes NaN
        except OverflowError:
            row = next(i for i, v in enumerate(values) if isinstance(v, int) and abs(v) > 1e308)
            raise InvalidRequestError(
                f"columns.{name}[{row}]: {values[row]!r} is not a finite number", feature=name
            ) from None
        absent = np.isnan(x)
        # a NaN the caller sent (not a None) is no number, as infinity is not
        infinite = np.isinf(x) | (absent & np.fromiter((v is not None for v in values), bool, rows))
        if infinite.any():
            row = int(np.flatnonzero(infinite)[0])
            raise InvalidRequestError(
                f"columns.{name}[{row}]: {values[row]!r} is not a finite number", feature=name
            )
        coded = np.isin(x, codes) if len(codes) else np.zeros(rows, dtype=bool)
        if not feature.nullable and (absent.any() or coded.any()):
            row = int(np.flatnonzero(absent | coded)[0])
            what = "missing" if absent[row] else f"{x[row]:g} means missing"
            raise InvalidRequestError(
                f"columns.{name}[{row}]: {what}, and this feature cannot be missing",
                feature=name,
            )
        low, high = feature.range
        outside = ~absent & ~coded & ((x < low) | (x > high))
        if outside.any():
            row = int(np.flatnonzero(outside)[0])
            raise InvalidRequestError(
                f"columns.{name}[{row}]: {x[row]:g} is outside [{low:g}, {high:g}]", feature=name
            )
        x[coded] = np.nan
        return x

    @staticmethod
    def _categories(
        feature: CategoricalFeature, index: dict[Any, int], values: Sequence[Any] | None, rows: int
    ) -> list[int]:
        name = feature.name
        if values is None:
            if not feature.nullable:
                raise InvalidRequestError(
                    f"columns.{name}: missing, and this feature cannot be missing", feature=name
                )
            return [MISSING_CATEGORY] * rows
        if not _CATEGORY_TYPES.issuperset(map(type, values)):
            row = next(i for i, v in enumerate(values) if type(v) not in _CATEGORY_TYPES)
            raise InvalidRequestError(
                f"columns.{name}[{row}]: expected a category, got {type(values[row]).__name__}",
                feature=name,
            )
        codes = list(map(index.get, values))
        if None not in codes:
            return codes  # type: ignore[return-value]
        for row, code in enumerate(codes):
            if code is not None:
                continue
            value = values[row]
            if value is None:
                if not feature.nullable:
                    raise InvalidRequestError(
                        f"columns.{name}[{row}]: missing, and this feature cannot be missing",
                        feature=name,
                    )
                codes[row] = MISSING_CATEGORY
                continue
            if isinstance(value, float) and not math.isfinite(value):
                raise InvalidRequestError(f"columns.{name}[{row}]: {value!r} is not a category")
            found = index.get(canonical(value))
            if found is None:
                expected = ", ".join(feature.categories)
                raise InvalidRequestError(
                    f"columns.{name}[{row}]: unknown category {value!r}; expected one of "
                    f"{expected}",
                    feature=name,
                )
            codes[row] = found
        return codes  # type: ignore[return-value]
