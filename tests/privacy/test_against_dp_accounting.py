"""fedwarden's accounting against an independent implementation: Google's dp-accounting."""

from __future__ import annotations

import warnings

import dp_accounting
import pytest
from dp_accounting import pld, rdp

from privacy.accounting import AccountingStep, compute_epsilon

# (sample rate, noise multiplier, steps, δ): small and large q, weak and strong noise
SETTINGS = [
    (0.01, 1.1, 1000, 1e-5),
    (0.2, 4.08, 25, 1e-5),
    (0.05, 0.8, 500, 1e-6),
    (0.001, 0.6, 10_000, 1e-5),
    (0.1, 2.0, 100, 1e-5),
    (0.5, 10.0, 10, 1e-5),
    (0.02, 1.5, 2000, 1e-7),
]


def google_event(q: float, sigma: float, steps: int) -> dp_accounting.DpEvent:
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )


def ours(q: float, sigma: float, steps: int, delta: float, accountant: str) -> float:
    history = [AccountingStep(noise_multiplier=sigma, sample_rate=q, steps=steps)]
    return compute_epsilon(history, delta=delta, accountant=accountant)


@pytest.mark.parametrize(("q", "sigma", "steps", "delta"), SETTINGS)
def test_rdp_agrees_with_google_rdp_within_one_percent(q, sigma, steps, delta):
    reference = rdp.RdpAccountant()
    reference.compose(google_event(q, sigma, steps))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = reference.get_epsilon(delta)

    assert ours(q, sigma, steps, delta, "rdp") == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize(("q", "sigma", "steps", "delta"), SETTINGS)
def test_prv_agrees_with_google_pld_within_three_percent(q, sigma, steps, delta):
    reference = pld.PLDAccountant(value_discretization_interval=1e-4)
    reference.compose(google_event(q, sigma, steps))
    expected = reference.get_epsilon(delta)

    assert ours(q, sigma, steps, delta, "prv") == pytest.approx(expected, rel=0.03)
