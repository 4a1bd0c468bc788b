from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from client.contract.architecture import ModelSpec
from client.models import build_model, get_weights, set_weights
from client.training import evaluate_model, train_locally
from privacy.errors import ConfigError
from privacy.sampling import effective_sample_rate, steps_per_epoch

CPU = torch.device("cpu")


def blobs(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    features = rng.normal(size=(n, 4)).astype(np.float32) + labels[:, None] * 1.5
    return features, labels


def fresh(seed: int = 0) -> torch.nn.Module:
    return build_model(ModelSpec(name="logreg", num_features=4, num_classes=2), seed=seed)


def train(model: torch.nn.Module, noise: float | None, *, seed: int = 1, **kwargs: float) -> object:
    x, y = blobs()
    options = {"epochs": 2, "learning_rate": 0.5, "sample_rate": 0.1, "max_grad_norm": 1.0}
    options.update(kwargs)
    return train_locally(model, x, y, noise_multiplier=noise, seed=seed, device=CPU, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("noise", [None, 0.8])
def test_training_learns_the_blobs(noise):
    model = fresh()
    x, y = blobs(seed=1)
    before = evaluate_model(model, x, y, device=CPU).accuracy

    outcome = train(model, noise, epochs=5)

    after = evaluate_model(model, x, y, device=CPU).accuracy
    assert after > max(before, 0.85)
    assert outcome.num_examples == 200 and math.isfinite(outcome.mean_loss)


def test_dp_training_reports_its_accounting_and_plain_training_none():
    private = train(fresh(), 1.1)
    plain = train(fresh(), None)

    assert plain.accounting is None
    assert private.accounting.noise_multiplier == 1.1
    assert private.accounting.sample_rate == pytest.approx(effective_sample_rate(200, 0.1))
    assert private.accounting.steps == 2 * steps_per_epoch(200, 0.1)


def test_same_seed_same_weights_other_seed_other_weights():
    first = train(fresh(), 1.0, seed=5)
    again = train(fresh(), 1.0, seed=5)
    other = train(fresh(), 1.0, seed=6)

    for a, b in zip(first.weights, again.weights, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.weights[0], other.weights[0])


def test_empty_poisson_batches_take_a_noise_step_and_stay_finite():
    x, y = blobs(n=12)
    model = fresh()

    outcome = train_locally(
        model,
        x,
        y,
        epochs=3,
        learning_rate=0.1,
        sample_rate=0.05,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        seed=3,
        device=CPU,
    )

    # 12 rows in 12 batches per epoch at q=1/12: some batches are empty, every step counts
    assert outcome.accounting.steps == 3 * 12
    assert all(np.isfinite(w).all() for w in outcome.weights)


def test_a_large_proximal_term_keeps_weights_near_the_start():
    start = get_weights(fresh())
    free = train(fresh(), None, proximal_mu=0.0)
    held = train(fresh(), None, proximal_mu=1.9)  # lr * mu < 1: a contraction

    moved_free = sum(np.abs(a - b).sum() for a, b in zip(free.weights, start, strict=True))
    moved_held = sum(np.abs(a - b).sum() for a, b in zip(held.weights, start, strict=True))
    assert moved_held < 0.5 * moved_free


def test_weights_of_the_wrong_shape_are_refused():
    model = fresh()
    weights = get_weights(model)
    with pytest.raises(ConfigError, match="has shape"):
        set_weights(model, [weights[0].T, weights[1]])
    with pytest.raises(ConfigError, match="expected 2 arrays"):
        set_weights(model, weights[:1])


def test_models_by_name_and_their_errors():
    cnn = build_model(
        ModelSpec(name="cnn", num_features=64, num_classes=10, image_shape=(8, 8)), seed=0
    )
    mlp = build_model(ModelSpec(name="mlp", num_features=5, num_classes=3, hidden=8), seed=0)

    assert cnn(torch.zeros(3, 64)).shape == (3, 10)
    assert mlp(torch.zeros(2, 5)).shape == (2, 3)
    with pytest.raises(ConfigError, match="needs a dataset whose schema declares an image shape"):
        build_model(ModelSpec(name="cnn", num_features=30, num_classes=2))
    with pytest.raises(ConfigError, match="unknown model 'resnet'"):
        ModelSpec(name="resnet", num_features=3, num_classes=2)
    spec = ModelSpec(name="cnn", num_features=64, num_classes=10, image_shape=(8, 8))
    assert ModelSpec.from_dict(spec.to_dict()) == spec
