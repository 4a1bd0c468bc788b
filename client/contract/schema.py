"""Table schemas: what an institution declares about its data, and the check of a file.

A schema names each feature with its kind (numeric with a valid range,
categorical with its categories, or one fixed-shape image of pixels in a
range), whether it may be missing, and the target with its class labels. Ranges
and categories are part of the consortium's data dictionary, not learned from
rows: preprocessing needs nothing pooled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from client.contract.errors import SchemaError
from privacy.redaction import REDACTOR

logger = logging.getLogger(__name__)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NumericFeature(_Frozen):
    """A real-valued feature with the range its values must lie in."""

    kind: Literal["numeric"] = "numeric"
    name: str = Field(min_length=1)
    range: tuple[float, float]
    nullable: bool = False
    missing_values: tuple[float, ...] = ()
    sensitive: bool = False
    """Its values never appear in a message or a log line (see ``shown``)."""

    @model_validator(mode="after")
    def _check_range(self) -> NumericFeature:
        low, high = self.range
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"range of {self.name!r} must be finite with low < high")
        return self


class CategoricalFeature(_Frozen):
    """A feature whose values come from a declared list of categories."""

    kind: Literal["categorical"] = "categorical"
    name: str = Field(min_length=1)
    categories: tuple[str, ...] = Field(min_length=1)
    nullable: bool = False
    sensitive: bool = False
    """Its values never appear in a message, and are masked in log lines."""

    @model_validator(mode="after")
    def _check_categories(self) -> CategoricalFeature:
        if len(set(self.categories)) != len(self.categories):
            raise ValueError(f"categories of {self.name!r} repeat a value")
        return self


Feature = Annotated[NumericFeature | CategoricalFeature, Field(discriminator="kind")]


class ImageFeature(_Frozen):
    """A fixed-shape image (a tensor feature): ``shape`` pixels, each within ``range``.

    In a schema file it is one entry, ``{"kind": "image", "name": "pixel", "shape":
    [28, 28], "range": [0, 255]}``; the schema holds it as one numeric feature per
    pixel (``pixel_0`` ... row-major) and records the shape, so every row is a
    flattened image and the image models know how to fold it back.
    """

    kind: Literal["image"] = "image"
    name: str = Field(min_length=1)
    shape: tuple[int, int]
    range: tuple[float, float] = (0.0, 255.0)

    def pixels(self) -> list[NumericFeature]:
        count = self.shape[0] * self.shape[1]
        return [NumericFeature(name=f"{self.name}_{i}", range=self.range) for i in range(count)]


def _expand_images(data: Any) -> Any:
    """A schema's ``image`` features as their pixels, and the image's shape recorded."""
    if not isinstance(data, dict) or not isinstance(data.get("features"), list | tuple):
        return data
    images = [f for f in data["features"] if isinstance(f, dict) and f.get("kind") == "image"]
    if not images:
        return data
    if len(images) > 1 or len(data["features"]) > 1:
        raise ValueError("an image schema holds exactly one image feature and nothing else")
    image = ImageFeature.model_validate(images[0])
    declared = data.get("image_shape")
    if declared is not None and tuple(declared) != image.shape:
        raise ValueError(f"image_shape {tuple(declared)} differs from the image's {image.shape}")
    return {**data, "features": image.pixels(), "image_shape": image.shape}


class TargetSpec(_Frozen):
    """The column to predict; raw values map to ``labels`` (directly or through ``mapping``)."""

    name: str = Field(min_length=1)
    labels: tuple[str, ...] = Field(min_length=2)
    mapping: dict[str, str] | None = None

    @model_validator(mode="after")
    def _check_mapping(self) -> TargetSpec:
        if self.mapping is not None:
            unknown = sorted(set(self.mapping.values()) - set(self.labels))
            if unknown:
                raise ValueError(f"target mapping names unknown labels {unknown}")
        return self

    def label_of(self, raw: str) -> str | None:
        """The label for a canonical raw value, or ``None`` if it has none."""
        label = self.mapping.get(raw) if self.mapping is not None else raw
        return label if label in self.labels else None


class TableSchema(_Frozen):
    """What an institution's table holds: features in order, and the target."""

    name: str = Field(min_length=1)
    features: tuple[Feature, ...] = Field(min_length=1)
    target: TargetSpec
    image_shape: tuple[int, int] | None = None

    @model_validator(mode="before")
    @classmethod
    def _images(cls, data: Any) -> Any:
        return _expand_images(data)

    @model_validator(mode="after")
    def _check_names(self) -> TableSchema:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names repeat")
        if self.target.name in names:
            raise ValueError(f"target {self.target.name!r} is also a feature")
        if self.image_shape is not None and math.prod(self.image_shape) != len(names):
            raise ValueError(f"image shape {self.image_shape} does not hold {len(names)} features")
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON: equal schemas, equal fingerprints (computed once:
        the schema is frozen, and an image's has hundreds of features)."""
        known = _FINGERPRINTS.get(id(self))
        if known is not None and known[0] is self:
            return known[1]
        data = self.model_dump(mode="json")
        for feature in data["features"]:  # unflagged: the same fingerprint as before the flag
            if not feature.get("sensitive"):
                feature.pop("sensitive", None)
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        fingerprint = hashlib.sha256(canonical.encode()).hexdigest()
        with _FINGERPRINTS_LOCK:
            _FINGERPRINTS[id(self)] = (self, fingerprint)
            while len(_FINGERPRINTS) > _KEEP_FINGERPRINTS:
                del _FINGERPRINTS[next(iter(_FINGERPRINTS))]
        return fingerprint


_FINGERPRINTS: dict[int, tuple[TableSchema, str]] = {}
"""The last schemas fingerprinted, by identity (each entry holds its schema, so an id is
never reused while it is here; not a private attribute, which pydantic would compare)."""

_FINGERPRINTS_LOCK = threading.Lock()
_KEEP_FINGERPRINTS = 16


def load_schema(path: str | Path) -> TableSchema:
    """Read a schema from a JSON file; a malformed one raises ``SchemaError``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SchemaError(f"cannot read schema file {path}: {exc.strerror}") from exc
    try:
        return TableSchema.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise SchemaError(f"schema file {path} is invalid at {where}: {first['msg']}") from exc


def canonical(value: Any) -> str:
    """The string under which a raw value is compared with declared categories and labels."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    return str(value).strip()


def validate_frame(frame: pd.DataFrame, schema: TableSchema) -> pd.DataFrame:
    """Check ``frame`` against ``schema``; return its features and target, typed and in order.

    Numeric columns come back as float64 with declared missing values as NaN;
    categorical columns and the target as canonical strings (``None`` where
    missing). The first problem raises ``SchemaError`` naming the column.
    """
    if len(frame) == 0:
        raise SchemaError("the table has no rows")
    missing = [name for name in [*schema.feature_names, schema.target.name] if name not in frame]
    if missing:
        raise SchemaError("is missing from the table", column=missing[0], missing=missing)
    extra = [
        str(c) for c in frame.columns if c not in schema.feature_names and c != schema.target.name
    ]
    if extra:
        logger.info("ignoring %d column(s) the schema does not declare: %s", len(extra), extra)
    out: dict[str, pd.Series] = {}
    for feature in schema.features:
        column = frame[feature.name].reset_index(drop=True)
        if isinstance(feature, NumericFeature):
            out[feature.name] = _numeric(column, feature)
        else:
            out[feature.name] = _categorical(column, feature)
        if feature.sensitive:  # mask its values in every later log line of this process
            REDACTOR.add_literals(str(v) for v in column.dropna().unique() if isinstance(v, str))
    out[schema.target.name] = _target(frame[schema.target.name].reset_index(drop=True), schema)
    return pd.DataFrame(out)


def shown(feature: NumericFeature | CategoricalFeature, value: str) -> str:
    """``value`` as a message may quote it: withheld if the feature is ``sensitive``."""
    return "a value (withheld: the column is sensitive)" if feature.sensitive else value


def _row(mask: pd.Series | np.ndarray) -> int:
    """The 1-based row of the first true value of ``mask``."""
    return int(np.flatnonzero(np.asarray(mask))[0]) + 1


def _numeric(column: pd.Series, feature: NumericFeature) -> pd.Series:
    if column.dtype == bool:
        raise SchemaError("holds true/false values but is declared numeric", column=feature.name)
    values = pd.to_numeric(column, errors="coerce").astype("float64")
    bad = values.isna() & column.notna()
    if bad.any():
        row = _row(bad)
        raise SchemaError(
            f"non-numeric value {shown(feature, repr(column[row - 1]))} at row {row}",
            column=feature.name,
            row=row,
        )
    infinite = np.isinf(values.to_numpy())
    if infinite.any():
        raise SchemaError(f"infinite value at row {_row(infinite)}", column=feature.name)
    if feature.missing_values:
        values = values.mask(values.isin(feature.missing_values))
    if not feature.nullable and values.isna().any():
        raise SchemaError(
            f"missing value at row {_row(values.isna())}, and the schema says it cannot be missing",
            column=feature.name,
        )
    low, high = feature.range
    outside = (values < low) | (values > high)
    if outside.any():
        row = _row(outside)
        raise SchemaError(
            f"{int(outside.sum())} value(s) outside the declared range [{low:g}, {high:g}] "
            f"(first at row {row}: {shown(feature, format(values[row - 1], 'g'))})",
            column=feature.name,
            row=row,
        )
    return values


def _categorical(column: pd.Series, feature: CategoricalFeature) -> pd.Series:
    present = column.notna()
    values = pd.Series(
        [canonical(v) if ok else None for v, ok in zip(column, present, strict=True)],
        dtype=object,
    )
    if not feature.nullable and not present.all():
        raise SchemaError(
            f"missing value at row {_row(~present)}, and the schema says it cannot be missing",
            column=feature.name,
        )
    unknown = present & ~values.isin(feature.categories)
    if unknown.any():
        row = _row(unknown)
        raise SchemaError(
            f"unknown category {shown(feature, repr(values[row - 1]))} at row {row}; declared: "
            + ", ".join(feature.categories),
            column=feature.name,
            row=row,
        )
    return values.astype(object)


def _target(column: pd.Series, schema: TableSchema) -> pd.Series:
    target = schema.target
    if column.isna().any():
        raise SchemaError(f"missing target at row {_row(column.isna())}", column=target.name)
    labels = column.map(lambda v: target.label_of(canonical(v)))
    unknown = labels.isna()
    if unknown.any():
        row = _row(unknown)
        raise SchemaError(
            f"target value {canonical(column[row - 1])!r} at row {row} maps to no declared label "
            f"({', '.join(target.labels)})",
            column=target.name,
            row=row,
        )
    return labels.astype(object)
