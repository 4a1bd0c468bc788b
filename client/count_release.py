"""An institution's published row counts: Gaussian-noised once per run, accounted.

fedwarden accounts ε for add-or-remove-one neighbours (PRV by default): two
datasets that differ by one patient's row, present in one and absent from the
other. Under that relation an institution's exact row counts are themselves a
statistic of its rows, so no exact count leaves a node. The node draws its
*published* counts once per run (its training rows and its held-out rows, a
vector whose L2 sensitivity to adding or removing one row is 1), adds Gaussian
noise of standard deviation ``count_noise_multiplier`` (its own policy's, never
the coordinator's) from the OS's secure source, records that release in its
account, and uses the published counts wherever a count leaves: the census, the
weight of every update, summary and profile, the reports.

The noisy counts are kept in the node's run state (``context.state``), so every
message of the run uses the same draw: one release per run, however many
messages carry it.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass

import numpy as np
from flwr.app import ConfigRecord, RecordDict

from privacy.account import InstitutionAccount
from privacy.accounting import AccountingStep

logger = logging.getLogger(__name__)

_STATE_KEY = "fedwarden.published-counts"


@dataclass(frozen=True)
class PublishedCounts:
    """The row counts a node publishes (noised): training rows and held-out rows, each ≥ 1."""

    train: int
    test: int


def count_release_step(noise_multiplier: float) -> AccountingStep:
    """The accounting entry of one count release (a Gaussian on a sensitivity-1 vector)."""
    return AccountingStep(noise_multiplier=noise_multiplier, sample_rate=1.0, steps=1)


def published_counts(
    *,
    institution: str,
    num_train: int,
    num_test: int,
    noise_multiplier: float,
    account: InstitutionAccount,
    state: RecordDict,
    reproducible: bool = False,
) -> PublishedCounts:
    """The run's published counts: drawn, checked and recorded on the first call, then reused.

    Raises
    ------
    BudgetExceededError
        The release would pass the institution's budget (nothing is drawn or sent).
    """
    record = state.config_records.get(_STATE_KEY)
    if record is not None:
        return PublishedCounts(train=int(record["train"]), test=int(record["test"]))  # type: ignore[arg-type]
    step = count_release_step(noise_multiplier)
    account.check([step])
    seed = (
        int.from_bytes(hashlib.sha256(f"counts:{institution}".encode()).digest()[:8], "big")
        if reproducible
        else secrets.randbits(128)
    )
    noise = np.random.default_rng(seed).normal(0.0, noise_multiplier, size=2)
    counts = PublishedCounts(
        train=max(1, round(num_train + float(noise[0]))),
        test=max(1, round(num_test + float(noise[1]))),
    )
    epsilon = account.record([step])
    state.config_records[_STATE_KEY] = ConfigRecord({"train": counts.train, "test": counts.test})
    logger.info(
        "%s publishes noisy row counts (σ %.3g rows): ε now %.4g",
        institution,
        noise_multiplier,
        epsilon,
    )
    return counts
