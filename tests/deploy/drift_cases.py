"""Seeded windows with controlled shifts, on heart-disease and on a synthetic table.

Each case draws ``windows`` windows of ``rows`` rows and returns them as the
served model's encoded arrays with a leading windows axis, with the model's
probabilities, so ``ProfileLayout.counts`` bins all of them in one call.

* heart-disease: the "world" is the 920 patients themselves; the reference
  profile is theirs, windows are bootstrap samples of them (so an unshifted
  window comes from exactly the reference distribution). The model is a
  logistic regression on the federation's preprocessing.
* synthetic: a known generator; the reference is 200,000 rows drawn from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from client.contract.preprocessing import PreprocessingSpec
from client.contract.profile import ProfileLayout, ReferenceProfile, encode_frame
from client.contract.schema import CategoricalFeature, NumericFeature, TableSchema, TargetSpec
from client.datasets import get_dataset

WINDOWS, ROWS = 200, 500


@dataclass
class Windows:
    numeric: np.ndarray  # (windows, rows, numeric features)
    categorical: np.ndarray
    probabilities: np.ndarray


@dataclass
class Case:
    layout: ProfileLayout
    reference: ReferenceProfile
    windows: Windows

    def counts(self) -> np.ndarray:
        w = self.windows
        return self.layout.counts(w.numeric, w.categorical, w.probabilities)


class HeartWorld:
    """The 920 heart-disease patients, a model of them, and their reference profile."""

    def __init__(self) -> None:
        source = get_dataset("heart-disease")
        self.schema = source.schema
        self.frame = source.load()
        self.spec = PreprocessingSpec.fit(self.frame, self.schema)
        self.model = LogisticRegression(max_iter=1000).fit(
            self.spec.transform(self.frame), self.spec.labels(self.frame)
        )
        self.layout = ProfileLayout.for_schema(self.schema)
        numeric, categorical = encode_frame(self.frame, self.schema)
        self.reference = ReferenceProfile(
            layout=self.layout,
            counts=self.layout.counts(numeric, categorical, self.probabilities(self.frame)),
            rows=float(len(self.frame)),
        )

    def probabilities(self, frame: pd.DataFrame) -> np.ndarray:
        result: np.ndarray = self.model.predict_proba(self.spec.transform(frame))
        return result

    def case(
        self,
        *,
        seed: int,
        weights: np.ndarray | None = None,
        shift: tuple[str, float] | None = None,
    ) -> Case:
        """Bootstrap windows (rows drawn with probability ∝ ``weights``), ``shift`` added to
        one numeric column in units of its standard deviation (clipped to its range)."""
        rng = np.random.default_rng(seed)
        p = None if weights is None else weights / weights.sum()
        index = rng.choice(len(self.frame), size=WINDOWS * ROWS, p=p)
        frame = self.frame.iloc[index].reset_index(drop=True)
        if shift is not None:
            name, sds = shift
            feature = next(f for f in self.schema.features if f.name == name)
            assert isinstance(feature, NumericFeature)
            low, high = feature.range
            frame[name] = (frame[name] + sds * self.frame[name].std()).clip(low, high)
        numeric, categorical = encode_frame(frame, self.schema)
        probabilities = self.probabilities(frame)
        return Case(
            layout=self.layout,
            reference=self.reference,
            windows=Windows(
                numeric.reshape(WINDOWS, ROWS, -1),
                categorical.reshape(WINDOWS, ROWS, -1),
                probabilities.reshape(WINDOWS, ROWS, -1),
            ),
        )


SYNTHETIC_SCHEMA = TableSchema(
    name="synthetic",
    features=(
        NumericFeature(name="x1", range=(-8, 8)),
        NumericFeature(name="x2", range=(-8, 8), nullable=True),
        CategoricalFeature(name="colour", categories=("red", "green", "blue", "other")),
        NumericFeature(name="x3", range=(0, 20)),
        CategoricalFeature(name="site", categories=("a", "b", "c"), nullable=True),
    ),
    target=TargetSpec(name="y", labels=("negative", "positive")),
)
COLOURS = np.array([0.4, 0.3, 0.2, 0.1])
SITES = np.array([0.5, 0.3, 0.2])


class SyntheticWorld:
    """A generator with a known posterior: y ~ Bernoulli(prior), features given y."""

    def __init__(self, *, reference_rows: int = 200_000) -> None:
        self.schema = SYNTHETIC_SCHEMA
        self.layout = ProfileLayout.for_schema(self.schema)
        numeric, categorical, probabilities = self.draw(
            np.random.default_rng(12345), (reference_rows,)
        )
        self.reference = ReferenceProfile(
            layout=self.layout,
            counts=self.layout.counts(numeric, categorical, probabilities),
            rows=float(reference_rows),
        )

    def draw(
        self,
        rng: np.random.Generator,
        shape: tuple[int, ...],
        *,
        prior: float = 0.5,
        shift: tuple[str, float] | None = None,
        colours: np.ndarray = COLOURS,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y = rng.random(shape) < prior
        x1 = rng.normal(np.where(y, 2.0, 0.0), 1.0)
        x2 = rng.normal(0.0, 1.5, shape)
        x2[rng.random(shape) < 0.05] = np.nan
        x3 = rng.gamma(4.0, 1.0, shape).clip(0, 20)
        if shift is not None:
            name, sds = shift
            sd = {"x1": np.sqrt(2.0), "x2": 1.5, "x3": 2.0}[name]
            target = {"x1": x1, "x2": x2, "x3": x3}[name]
            target += sds * sd
        colour = _categorical(rng, colours, shape)
        site = _categorical(rng, SITES, shape)
        site[rng.random(shape) < 0.03] = -1
        numeric = np.stack([x1, x2, x3], axis=-1).astype(np.float32)
        categorical = np.stack([colour, site], axis=-1)
        # The posterior under the reference prior 0.5: logit = 2 x1 - 2.
        positive = 1.0 / (1.0 + np.exp(-(2 * x1 - 2)))
        probabilities = np.stack([1 - positive, positive], axis=-1)
        return numeric, categorical, probabilities

    def case(self, *, seed: int, **shift: object) -> Case:
        numeric, categorical, probabilities = self.draw(
            np.random.default_rng(seed),
            (WINDOWS, ROWS),
            **shift,  # type: ignore[arg-type]
        )
        return Case(self.layout, self.reference, Windows(numeric, categorical, probabilities))


def _categorical(rng: np.random.Generator, p: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.searchsorted(np.cumsum(p), rng.random(shape) * p.sum()).clip(0, len(p) - 1)
