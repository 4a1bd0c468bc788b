"""DP-SGD's sampling arithmetic: batches, the sample rate really used, steps per epoch.

One definition, used by local training (the loader), by the plan (the bound on an
update) and by accounting (what a round will cost), so that the three agree.
"""

from __future__ import annotations

import math

from privacy.accounting import AccountingStep


def batches_per_epoch(sample_rate: float) -> int:
    """About ``1 / sample_rate`` batches: the most steps one epoch takes, whatever the rows."""
    return max(1, round(1 / sample_rate))


def batch_size_for(num_examples: int, sample_rate: float) -> int:
    """The loader batch size whose number of batches per epoch is about ``1 / sample_rate``."""
    return max(1, math.ceil(num_examples / batches_per_epoch(sample_rate)))


def effective_sample_rate(num_examples: int, sample_rate: float) -> float:
    """The Poisson sample rate DP-SGD really uses: one over the loader's number of batches."""
    batch_size = batch_size_for(num_examples, sample_rate)
    return 1.0 / math.ceil(num_examples / batch_size)


def steps_per_epoch(num_examples: int, sample_rate: float) -> int:
    """DP-SGD steps in one epoch over ``num_examples`` rows (never more than
    ``batches_per_epoch(sample_rate)``)."""
    return round(1 / effective_sample_rate(num_examples, sample_rate))


def training_step(
    *, num_examples: int, sample_rate: float, local_epochs: int, noise_multiplier: float
) -> AccountingStep:
    """What one round of local DP-SGD over ``num_examples`` rows costs, to be accounted."""
    return AccountingStep(
        noise_multiplier=noise_multiplier,
        sample_rate=effective_sample_rate(num_examples, sample_rate),
        steps=local_epochs * steps_per_epoch(num_examples, sample_rate),
    )
