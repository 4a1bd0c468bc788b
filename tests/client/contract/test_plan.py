"""The training plan on the wire: written once, read back the same, malformed plans refused."""

from __future__ import annotations

import pytest

from client.contract.plan import TrainingPlan
from client.contract.wire import PROFILE_NOISE_KEY
from privacy.config import DPConfig
from privacy.errors import ConfigError, UnknownNameError
from privacy.sampling import batches_per_epoch


def test_a_plan_round_trips_through_the_config_record():
    plan = TrainingPlan(
        model="mlp",
        hidden=16,
        num_rounds=3,
        local_epochs=2,
        learning_rate=0.5,
        sample_rate=0.15,
        seed=7,
        update_clip_norm=3.0,
        uniform_weights=True,
        profile_noise_multiplier=2.0,
        dp=DPConfig(noise_multiplier=1.1, max_grad_norm=0.5, target_delta=1e-6, accountant="rdp"),
    )

    assert TrainingPlan.from_config(plan.to_config()) == plan


def test_unset_numbers_travel_as_minus_one_and_come_back_unset():
    plan = TrainingPlan(dp=DPConfig(noise_multiplier=None, target_epsilon=None))
    config = plan.to_config()

    assert config["fw.noise-multiplier"] == config["fw.target-epsilon"] == -1.0
    back = TrainingPlan.from_config(config)
    assert back.dp.noise_multiplier is None and back.dp.target_epsilon is None


def test_an_older_coordinator_without_the_profile_key_is_understood():
    config = TrainingPlan(profile_noise_multiplier=3.0).to_config()
    del config[PROFILE_NOISE_KEY]

    assert TrainingPlan.from_config(config).profile_noise_multiplier is None


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        ({"fw.seed": None}, "round config lacks 'fw.seed'"),
        ({"fw.hidden": "wide"}, "round config is malformed"),
        ({"fw.model": "transformer"}, "unknown model 'transformer'"),
    ],
)
def test_a_malformed_plan_is_refused(change, phrase):
    config = TrainingPlan().to_config()
    for key, value in change.items():
        if value is None:
            del config[key]
        else:
            config[key] = value

    with pytest.raises((ConfigError, UnknownNameError), match=phrase):
        TrainingPlan.from_config(config)


@pytest.mark.parametrize("sample_rate", [0.15, 0.2, 0.3])
def test_the_default_update_bound_counts_the_steps_training_can_take(sample_rate):
    plan = TrainingPlan(sample_rate=sample_rate, local_epochs=2, learning_rate=0.5)

    expected = 0.5 * plan.dp.max_grad_norm * 2 * batches_per_epoch(sample_rate)
    assert plan.effective_update_clip_norm == pytest.approx(expected)
