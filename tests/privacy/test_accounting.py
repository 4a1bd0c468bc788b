from __future__ import annotations

import math

import pytest

from privacy.accounting import (
    AccountingStep,
    compute_epsilon,
    get_accountant,
    merge_history,
    noise_multiplier_for,
)
from privacy.errors import AccountingError, UnknownNameError


def step(sigma: float, q: float, steps: int) -> AccountingStep:
    return AccountingStep(noise_multiplier=sigma, sample_rate=q, steps=steps)


def test_merging_keeps_order_and_sums_equal_neighbours():
    history = [
        step(1.0, 0.1, 5),
        step(1.0, 0.1, 7),
        step(2.0, 0.1, 3),
        step(1.0, 0.1, 0),
        step(1.0, 0.1, 1),
    ]

    assert merge_history(history) == [step(1.0, 0.1, 12), step(2.0, 0.1, 3), step(1.0, 0.1, 1)]


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_epsilon_grows_with_steps_and_falls_with_noise(accountant):
    base = compute_epsilon([step(1.5, 0.05, 100)], delta=1e-5, accountant=accountant)
    longer = compute_epsilon([step(1.5, 0.05, 200)], delta=1e-5, accountant=accountant)
    noisier = compute_epsilon([step(3.0, 0.05, 100)], delta=1e-5, accountant=accountant)

    assert 0 < noisier < base < longer


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_split_history_composes_to_the_same_epsilon(accountant):
    whole = compute_epsilon([step(1.2, 0.1, 30)], delta=1e-5, accountant=accountant)
    pieces = compute_epsilon([step(1.2, 0.1, 10)] * 3, delta=1e-5, accountant=accountant)
    assert pieces == pytest.approx(whole, rel=1e-9)


def test_prv_is_tighter_than_rdp():
    history = [step(1.0, 0.01, 1000)]
    assert compute_epsilon(history, delta=1e-5, accountant="prv") < compute_epsilon(
        history, delta=1e-5, accountant="rdp"
    )


def test_no_noise_means_no_privacy_and_no_steps_means_none_spent():
    assert compute_epsilon([step(0.0, 0.1, 1)], delta=1e-5) == math.inf
    assert compute_epsilon([], delta=1e-5) == 0.0


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_derived_noise_meets_its_target(accountant):
    sigma = noise_multiplier_for(
        target_epsilon=2.0, target_delta=1e-5, sample_rate=0.05, steps=300, accountant=accountant
    )

    spent = compute_epsilon([step(sigma, 0.05, 300)], delta=1e-5, accountant=accountant)
    assert spent <= 2.0
    assert spent > 2.0 * 0.98  # not much more noise than needed


def test_bad_inputs_raise_typed_errors():
    with pytest.raises(UnknownNameError, match="unknown accountant 'gdp'"):
        get_accountant("gdp")
    with pytest.raises(AccountingError, match="sample rate"):
        compute_epsilon([step(1.0, 1.5, 10)], delta=1e-5)
    with pytest.raises(AccountingError, match="δ must be in"):
        compute_epsilon([step(1.0, 0.1, 10)], delta=1.0)
    with pytest.raises(AccountingError, match="steps must be > 0"):
        noise_multiplier_for(target_epsilon=1.0, target_delta=1e-5, sample_rate=0.1, steps=0)


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_derived_noise_leaves_room_for_a_reserved_release(accountant):
    profile = AccountingStep(noise_multiplier=5.0, sample_rate=1.0, steps=1)
    plain = noise_multiplier_for(
        target_epsilon=3.0, target_delta=1e-5, sample_rate=0.2, steps=25, accountant=accountant
    )
    sigma = noise_multiplier_for(
        target_epsilon=3.0, target_delta=1e-5, sample_rate=0.2, steps=25, accountant=accountant,
        reserved=[profile],
    )
    training = AccountingStep(noise_multiplier=sigma, sample_rate=0.2, steps=25)
    spent = compute_epsilon([training, profile], delta=1e-5, accountant=accountant)

    assert sigma > plain
    assert 0.98 * 3.0 <= spent <= 3.0  # all of the target, none past it


def test_a_reserve_that_alone_passes_the_target_is_refused():
    with pytest.raises(AccountingError, match="nothing is left for training"):
        noise_multiplier_for(
            target_epsilon=0.5, target_delta=1e-5, sample_rate=0.2, steps=25,
            reserved=[AccountingStep(noise_multiplier=1.0, sample_rate=1.0, steps=1)],
        )


@pytest.fixture
def disk_cache(tmp_path):
    from privacy import accounting

    path = tmp_path / "accounting-cache.sqlite"
    accounting.use_disk_cache(path)
    accounting._cached_epsilon.cache_clear()
    yield path
    accounting.use_disk_cache(None)
    accounting._cached_epsilon.cache_clear()


def test_a_fresh_process_finds_epsilon_and_sigma_in_the_disk_cache(disk_cache, monkeypatch):
    # What each forked ClientApp of a deployed node does: its in-memory cache starts cold.
    from privacy import accounting

    history = [step(1.1, 0.05, 120)]
    epsilon = compute_epsilon(history, delta=1e-5, accountant="rdp")
    sigma = noise_multiplier_for(
        target_epsilon=2.0, target_delta=1e-5, sample_rate=0.05, steps=100, accountant="rdp"
    )
    accounting._cached_epsilon.cache_clear()  # "a new process"

    def no_accountant(name: str) -> accounting.Accountant:
        raise AssertionError(f"the {name} accountant ran although the result was cached")

    monkeypatch.setattr(accounting, "get_accountant", no_accountant)

    assert compute_epsilon(history, delta=1e-5, accountant="rdp") == epsilon
    assert noise_multiplier_for(
        target_epsilon=2.0, target_delta=1e-5, sample_rate=0.05, steps=100, accountant="rdp"
    ) == sigma
    with pytest.raises(AssertionError, match="ran although"):  # a different δ is not cached
        compute_epsilon(history, delta=1e-6, accountant="rdp")
    assert disk_cache.stat().st_size > 0


def test_an_unusable_disk_cache_is_skipped_not_fatal(tmp_path, caplog):
    from privacy import accounting

    bad = tmp_path / "accounting-cache.sqlite"
    bad.write_bytes(b"not a database" * 100)
    try:
        accounting.use_disk_cache(bad)
        accounting._cached_epsilon.cache_clear()
        value = compute_epsilon([step(1.1, 0.05, 10)], delta=1e-5, accountant="rdp")
    finally:
        accounting.use_disk_cache(None)
        accounting._cached_epsilon.cache_clear()

    assert 0 < value < math.inf
    assert "computing from cold" in caplog.text
