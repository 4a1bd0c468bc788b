"""Reference profiles: the layout from the schema, counts, the stored form."""

from __future__ import annotations

import numpy as np
import pytest

from client.contract.errors import DataError
from client.contract.profile import FINE_BINS, ProfileLayout, ReferenceProfile, encode_frame
from client.datasets import get_dataset

SCHEMA = get_dataset("heart-disease").schema


@pytest.fixture(scope="module")
def frame():
    return get_dataset("heart-disease").load()


def probabilities_for(rows: int, seed: int = 0) -> np.ndarray:
    positive = np.random.default_rng(seed).random(rows)
    return np.stack([1 - positive, positive], axis=1)


def test_the_layout_has_a_block_per_feature_and_for_the_models_outputs():
    layout = ProfileLayout.for_schema(SCHEMA)

    names = [b.name for b in layout.blocks]
    assert names == [*SCHEMA.feature_names, "prediction", "probability:disease"]
    age, sex = layout.blocks[0], layout.blocks[1]
    assert (age.kind, age.size, age.low, age.high) == ("numeric", FINE_BINS + 1, 0, 120)
    assert (sex.kind, sex.labels, sex.size, sex.offset) == ("categorical", ("Male", "Female"), 3, age.size)
    assert layout.size == sum(b.size for b in layout.blocks) == layout.blocks[-1].offset + FINE_BINS
    assert layout.sensitivity == pytest.approx(np.sqrt(len(layout.blocks)))
    assert not ProfileLayout.for_schema(SCHEMA, predictions=False).has_predictions
    with pytest.raises(DataError):
        ProfileLayout.for_schema(SCHEMA, bins=1)


def test_counts_match_numpy_histograms_and_every_block_counts_every_row(frame):
    layout = ProfileLayout.for_schema(SCHEMA)
    numeric, categorical = encode_frame(frame, SCHEMA)
    probabilities = probabilities_for(len(frame))

    counts = layout.counts(numeric, categorical, probabilities)

    profile = ReferenceProfile(layout=layout, counts=counts, rows=float(len(frame)))
    for block in layout.blocks:
        assert profile.block_counts(block).sum() == len(frame)
    chol = next(b for b in layout.blocks if b.name == "chol")
    values = frame["chol"].to_numpy(dtype=float)
    expected, _ = np.histogram(values[~np.isnan(values)], bins=chol.edges)
    assert np.array_equal(profile.block_counts(chol)[:FINE_BINS], expected)
    assert profile.block_counts(chol)[FINE_BINS] == np.isnan(values).sum()
    cp = next(b for b in layout.blocks if b.name == "cp")
    assert profile.block_counts(cp).tolist() == [
        float((frame["cp"] == c).sum()) for c in cp.labels] + [0.0]
    prediction = next(b for b in layout.blocks if b.kind == "prediction")
    assert profile.block_counts(prediction)[1] == (probabilities[:, 1] > 0.5).sum()


def test_counts_of_many_windows_at_once_equal_counts_one_by_one(frame):
    layout = ProfileLayout.for_schema(SCHEMA)
    numeric, categorical = encode_frame(frame.head(300), SCHEMA)
    probabilities = probabilities_for(300)

    together = layout.counts(numeric.reshape(3, 100, -1), categorical.reshape(3, 100, -1),
                             probabilities.reshape(3, 100, -1))

    for w in range(3):
        part = slice(100 * w, 100 * (w + 1))
        assert np.array_equal(together[w], layout.counts(numeric[part], categorical[part], probabilities[part]))


def test_a_profile_survives_its_stored_form_and_drops_its_predictions(frame):
    layout = ProfileLayout.for_schema(SCHEMA)
    numeric, categorical = encode_frame(frame, SCHEMA)
    profile = ReferenceProfile(layout=layout, counts=layout.counts(numeric, categorical, probabilities_for(len(frame))),
                               rows=920.0, round=5, institutions=("Cleveland", "Hungary"), noise_multiplier=2.0)

    again = ReferenceProfile.from_dict(profile.to_dict())
    features = again.without_predictions()

    assert np.array_equal(again.counts, profile.counts)
    assert [b.to_dict() for b in again.layout.blocks] == [b.to_dict() for b in layout.blocks]
    assert (again.rows, again.round, again.institutions, again.noise_multiplier) == (920.0, 5, ("Cleveland", "Hungary"), 2.0)
    assert [b.name for b in features.layout.blocks] == SCHEMA.feature_names
    assert features.counts.sum() == 920 * len(SCHEMA.features)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: {**d, "format": 99},
        lambda d: {k: v for k, v in d.items() if k != "blocks"},
        lambda d: {**d, "blocks": [{**d["blocks"][0], "kind": "image"}]},
        lambda d: {**d, "blocks": [{**d["blocks"][0], "counts": [1.0, 2.0]}]},
        lambda d: {**d, "blocks": [{**d["blocks"][0], "counts": [float("nan")] * (FINE_BINS + 1)}]},
        lambda d: {**d, "rows": "many"},
        lambda d: {**d, "blocks": [{"name": "age"}]},
    ],
)
def test_a_malformed_profile_is_a_data_error(change):
    layout = ProfileLayout.for_schema(SCHEMA, predictions=False)
    stored = ReferenceProfile(layout=layout, counts=np.ones(layout.size), rows=1.0).to_dict()

    with pytest.raises(DataError):
        ReferenceProfile.from_dict(change(stored))
