from __future__ import annotations

import pytest

from privacy.config import DPConfig, PrivacyBudget
from privacy.errors import ConfigError


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"epsilon": 0.0, "delta": 1e-5}, "budget ε must be > 0"),
        ({"epsilon": float("nan"), "delta": 1e-5}, "budget ε must be > 0"),
        ({"epsilon": 1.0, "delta": 1.0}, "budget δ must be in"),
    ],
)
def test_impossible_budgets_are_refused(kwargs, phrase):
    with pytest.raises(ConfigError, match=phrase):
        PrivacyBudget(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"noise_multiplier": -0.5}, "noise multiplier must be >= 0"),
        ({"noise_multiplier": 0.0}, "gives no privacy"),
        ({"target_delta": 1.0}, "δ must be in"),
        ({"max_grad_norm": 0.0}, "max grad norm"),
        ({"accountant": "gdp"}, "unknown accountant"),
        ({"target_epsilon": -1.0}, "target ε"),
    ],
)
def test_impossible_dp_settings_are_refused(kwargs, phrase):
    with pytest.raises(ConfigError, match=phrase):
        DPConfig(**kwargs)


def test_zero_noise_is_fine_when_dp_is_off():
    assert not DPConfig(enabled=False, noise_multiplier=0.0).enabled
