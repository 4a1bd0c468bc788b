from __future__ import annotations

import pytest

from privacy.sampling import (
    batch_size_for,
    batches_per_epoch,
    effective_sample_rate,
    steps_per_epoch,
    training_step,
)


def test_batch_plan_gives_about_one_over_q_batches():
    assert batch_size_for(200, 0.1) == 20
    assert effective_sample_rate(200, 0.1) == pytest.approx(0.1)
    assert steps_per_epoch(7, 0.2) == 4  # 7 rows cannot make 5 batches of equal size
    assert effective_sample_rate(7, 0.2) == pytest.approx(0.25)


@pytest.mark.parametrize("sample_rate", [0.05, 0.15, 0.2, 0.3, 0.45, 1.0])
@pytest.mark.parametrize("rows", [1, 7, 50, 303, 1000])
def test_an_epoch_never_takes_more_steps_than_the_plan_bounds(rows, sample_rate):
    # The plan's update bound counts batches_per_epoch steps; training must stay within it.
    assert 1 <= steps_per_epoch(rows, sample_rate) <= batches_per_epoch(sample_rate)


def test_a_training_step_is_what_the_loader_does_over_the_epochs():
    step = training_step(num_examples=200, sample_rate=0.1, local_epochs=3, noise_multiplier=1.2)

    assert step.noise_multiplier == 1.2
    assert step.sample_rate == pytest.approx(0.1)
    assert step.steps == 30
