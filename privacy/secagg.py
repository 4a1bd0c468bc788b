"""SecAgg+ settings derived from the federation's size and the update bound.

Flower's ``SecAggPlusWorkflow`` does the protocol; this module only chooses its
numbers so that (1) the coordinator cannot unmask an individual update without
colluding with a majority of that institution's neighbours, (2) the
institutions' sum cannot overflow the modulus, and (3) no value is clipped
silently: each coordinate of a clipped update already lies in
``[-update_clip_norm, update_clip_norm]``, which becomes the clipping range.

It also holds the two rules both sides keep: no secure sum of fewer than
``min_participants`` institutions (``MIN_SECURE_PARTICIPANTS`` by default: the
sum of two tells each the other's update), and a finite wait for every stage
(``secagg_timeout_s``), so one silent node cannot hold a round forever.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from privacy.errors import ConfigError, TooFewParticipantsError

MODULUS_RANGE = 2**32
"""The largest modulus Flower's SecAgg+ accepts."""

FULL_GRAPH_LIMIT = 10
"""Up to this many institutions every institution shares its keys with all others."""

MIN_SECURE_PARTICIPANTS = 3
"""k: the fewest institutions whose sum may be released (and the lowest allowed is 2)."""

FIRST_ROUND_TIMEOUT_S = 300.0
"""A SecAgg+ stage's wait before any round has been timed (covers cold starts)."""

MIN_TIMEOUT_S = 30.0
"""The shortest wait a derived SecAgg+ timeout gives a stage."""

TIMEOUT_ROUND_MULTIPLE = 5.0
"""A derived timeout is this many times the previous secure round's duration."""


def check_min_participants(value: int, *, source: str = "min-secure-participants") -> int:
    """``value`` as k, or a ``ConfigError`` naming ``source`` when it is below 2."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ConfigError(f"{source} must be an integer >= 2, got {value!r}")
    return value


def secagg_timeout_s(*, configured_s: float | None, previous_round_s: float | None) -> float:
    """How long each SecAgg+ stage waits for replies: finite, never ``None``.

    ``configured_s`` wins when given; otherwise ``TIMEOUT_ROUND_MULTIPLE`` times the
    previous secure round's duration, at least ``MIN_TIMEOUT_S``, and
    ``FIRST_ROUND_TIMEOUT_S`` before any round has been timed.
    """
    if configured_s is not None:
        if not configured_s > 0 or not math.isfinite(configured_s):
            raise ConfigError(f"SecAgg+ timeout must be a finite number > 0, got {configured_s}")
        return float(configured_s)
    if previous_round_s is None:
        return FIRST_ROUND_TIMEOUT_S
    return max(MIN_TIMEOUT_S, TIMEOUT_ROUND_MULTIPLE * previous_round_s)


@dataclass(frozen=True, kw_only=True)
class SecAggParameters:
    """The numbers one SecAgg+ round runs with."""

    num_institutions: int
    num_shares: int
    reconstruction_threshold: int
    clipping_range: float
    quantization_range: int
    modulus_range: int
    max_weight: float
    timeout_s: float

    @property
    def max_dropouts(self) -> int:
        """How many of an institution's neighbours may drop before its mask cannot be removed."""
        return self.num_shares - self.reconstruction_threshold

    @property
    def quantization_step(self) -> float:
        """Spacing of the quantization grid in the units of a (weighted) update coordinate."""
        return 2 * self.clipping_range / self.quantization_range

    def workflow_arguments(self) -> dict[str, object]:
        """Keyword arguments for ``flwr.server.workflow.SecAggPlusWorkflow``."""
        shares: int | float = self.num_shares
        threshold: int | float = self.reconstruction_threshold
        if self.num_institutions < 3:
            # Flower takes integer share counts only above 2; 1.0 means "every sampled node".
            shares, threshold = 1.0, 1.0
        return {
            "num_shares": shares,
            "reconstruction_threshold": threshold,
            "max_weight": self.max_weight,
            "clipping_range": self.clipping_range,
            "quantization_range": self.quantization_range,
            "modulus_range": self.modulus_range,
            "timeout": self.timeout_s,
        }

    def to_dict(self) -> dict[str, float | int]:
        return {
            "num_institutions": self.num_institutions,
            "num_shares": self.num_shares,
            "reconstruction_threshold": self.reconstruction_threshold,
            "clipping_range": self.clipping_range,
            "quantization_range": self.quantization_range,
            "modulus_range": self.modulus_range,
            "max_weight": self.max_weight,
            "timeout_s": self.timeout_s,
        }


def derive_secagg_parameters(
    *,
    num_institutions: int,
    clipping_range: float,
    max_weight: float,
    num_shares: int | None = None,
    reconstruction_threshold: int | None = None,
    timeout_s: float | None = None,
    min_participants: int = MIN_SECURE_PARTICIPANTS,
) -> SecAggParameters:
    """Choose SecAgg+ numbers for one round with ``num_institutions`` participants.

    Parameters
    ----------
    num_institutions : int
        Institutions sampled for the round (at least 2).
    clipping_range : float
        Largest absolute value of any coordinate an institution sends.
    max_weight : float
        Largest weight (number of training rows) of any institution; weights are
        scaled by it, so it must be at least every institution's row count.
    num_shares, reconstruction_threshold : int, optional
        Override the derived values: shares default to every other institution up
        to ``FULL_GRAPH_LIMIT`` and ``2 * ceil(log2 n) + 1`` above; the threshold
        to a strict majority of the shares.
    timeout_s : float, optional
        How long each stage waits for replies (``FIRST_ROUND_TIMEOUT_S`` when not
        given; see ``secagg_timeout_s``).
    min_participants : int
        k: refuse (``TooFewParticipantsError``) a round of fewer institutions.
    """
    n = num_institutions
    k = check_min_participants(min_participants)
    if n < k:
        raise TooFewParticipantsError(
            f"a secure sum of {n} institution(s) would be released, fewer than the "
            f"{k} that min-secure-participants requires",
            participants=n,
            minimum=k,
        )
    if not clipping_range > 0 or not math.isfinite(clipping_range):
        raise ConfigError(f"clipping range must be > 0, got {clipping_range}")
    if not max_weight >= 1:
        raise ConfigError(f"max weight must be >= 1, got {max_weight}")
    shares = num_shares if num_shares is not None else _default_shares(n)
    shares = min(shares, n)
    threshold = (
        reconstruction_threshold if reconstruction_threshold is not None else shares // 2 + 1
    )
    # A strict majority: a coordinator that asks half the shares for a node's mask seed
    # and the other half for its key can then never collect enough of both.
    if n >= 3 and not max(2, shares // 2 + 1) <= threshold < shares:
        raise ConfigError(
            f"reconstruction threshold must be in [{max(2, shares // 2 + 1)}, {shares - 1}] "
            f"for {shares} shares (a strict majority), got {threshold}"
        )
    if n >= 3 and shares < 3:
        raise ConfigError(f"SecAgg+ needs >= 3 shares, got {shares}")
    if n < 3:
        shares = threshold = n
    # The sum of n quantized vectors (each in [0, Q]) must stay below the modulus.
    quantization_range = 2 ** (int(math.log2(MODULUS_RANGE)) - math.ceil(math.log2(n + 1)) - 1)
    return SecAggParameters(
        num_institutions=n,
        num_shares=shares,
        reconstruction_threshold=threshold,
        clipping_range=float(clipping_range),
        quantization_range=quantization_range,
        modulus_range=MODULUS_RANGE,
        max_weight=float(max_weight),
        timeout_s=secagg_timeout_s(configured_s=timeout_s, previous_round_s=None),
    )


def _default_shares(n: int) -> int:
    if n <= FULL_GRAPH_LIMIT:
        return n
    shares = 2 * math.ceil(math.log2(n)) + 1
    return max(FULL_GRAPH_LIMIT + 1, shares) if shares < n else n
