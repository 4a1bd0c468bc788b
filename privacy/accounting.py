"""Privacy accounting: ε from a history of DP-SGD steps, and σ for a target ε.

Accountants sit behind one interface and are chosen by name; the numbers come
from Opacus's RDP and PRV accountants::

    >>> history = [AccountingStep(noise_multiplier=1.1, sample_rate=0.01, steps=1000)]
    >>> round(compute_epsilon(history, delta=1e-5, accountant="rdp"), 2)
    1.68
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from privacy.errors import AccountingError, UnknownNameError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class AccountingStep:
    """``steps`` DP-SGD steps at one noise multiplier and sample rate."""

    noise_multiplier: float
    sample_rate: float
    steps: int


def merge_history(history: Iterable[AccountingStep]) -> list[AccountingStep]:
    """Merge consecutive entries with the same σ and q (the accountants compose them)."""
    merged: list[AccountingStep] = []
    for entry in history:
        if entry.steps <= 0:
            continue
        if (
            merged
            and merged[-1].noise_multiplier == entry.noise_multiplier
            and merged[-1].sample_rate == entry.sample_rate
        ):
            last = merged.pop()
            entry = AccountingStep(  # noqa: PLW2901
                noise_multiplier=entry.noise_multiplier,
                sample_rate=entry.sample_rate,
                steps=last.steps + entry.steps,
            )
        merged.append(entry)
    return merged


REPLACE_ONE = "replace-one"
ADD_OR_REMOVE_ONE = "add-or-remove-one"


class Accountant(ABC):
    """Turns a history of subsampled-Gaussian steps into (ε, δ).

    ``neighbouring`` names the relation ε holds for: ``replace-one`` (two datasets
    of the same size differing in one row: what fedwarden's federations promise, since
    an institution's row counts are public) or ``add-or-remove-one``.
    """

    name: ClassVar[str]
    neighbouring: ClassVar[str] = ADD_OR_REMOVE_ONE

    @abstractmethod
    def epsilon(self, history: Sequence[AccountingStep], *, delta: float) -> float:
        """Return ε at ``delta`` for the composition of ``history``."""

    def noise_multiplier(
        self, *, target_epsilon: float, target_delta: float, sample_rate: float, steps: int
    ) -> float:
        """Return the smallest σ (to 1%) whose ``steps`` steps at ``sample_rate`` stay under ε."""
        from opacus.accountants.utils import get_noise_multiplier

        _check_rate(sample_rate)
        if steps <= 0:
            raise AccountingError(f"steps must be > 0, got {steps}", steps=steps)
        try:
            return float(
                get_noise_multiplier(
                    target_epsilon=target_epsilon,
                    target_delta=target_delta,
                    sample_rate=sample_rate,
                    steps=steps,
                    accountant=self.name,
                    epsilon_tolerance=0.005,
                )
            )
        except ValueError as exc:
            raise AccountingError(
                f"no noise multiplier reaches ε={target_epsilon} at δ={target_delta} "
                f"with sample rate {sample_rate} over {steps} steps: {exc}",
                target_epsilon=target_epsilon,
            ) from exc


class _OpacusAccountant(Accountant):
    def epsilon(self, history: Sequence[AccountingStep], *, delta: float) -> float:
        from opacus.accountants import create_accountant

        if not 0 < delta < 1:
            raise AccountingError(f"δ must be in (0, 1), got {delta}", delta=delta)
        steps = merge_history(history)
        if not steps:
            return 0.0
        for step in steps:
            _check_rate(step.sample_rate)
            if step.noise_multiplier <= 0:
                return math.inf
        accountant = create_accountant(mechanism=self.name)
        accountant.history = [(s.noise_multiplier, s.sample_rate, s.steps) for s in steps]
        try:
            return float(accountant.get_epsilon(delta=delta))
        except (ValueError, RuntimeError) as exc:
            raise AccountingError(f"{self.name} accountant failed: {exc}") from exc


class PldAccountant(Accountant):
    """Privacy-loss-distribution accountant (Google's ``dp_accounting``) under replace-one.

    Exact up to a pessimistic discretisation: ε is an upper bound. Poisson-subsampled
    DP-SGD steps and full-data Gaussian releases (``sample_rate`` 1: a noisy summary,
    profile or evaluation) compose heterogeneously. Under replace-one a released sum
    moves by up to twice a row's contribution, which the PLD of a replaced row accounts
    for exactly.
    """

    name = "pld"
    neighbouring = REPLACE_ONE
    _DISCRETISATION = 5e-3

    def epsilon(self, history: Sequence[AccountingStep], *, delta: float) -> float:
        import dp_accounting
        from dp_accounting.pld import pld_privacy_accountant

        if not 0 < delta < 1:
            raise AccountingError(f"δ must be in (0, 1), got {delta}", delta=delta)
        steps = merge_history(history)
        if not steps:
            return 0.0
        accountant = pld_privacy_accountant.PLDAccountant(
            neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE,
            value_discretization_interval=self._DISCRETISATION,
        )
        for step in steps:
            _check_rate(step.sample_rate)
            if step.noise_multiplier <= 0:
                return math.inf
            gaussian = dp_accounting.GaussianDpEvent(step.noise_multiplier)
            event: dp_accounting.DpEvent = (
                gaussian
                if step.sample_rate >= 1
                else dp_accounting.PoissonSampledDpEvent(step.sample_rate, gaussian)
            )
            accountant.compose(event, step.steps)
        return float(accountant.get_epsilon(delta))

    def noise_multiplier(
        self, *, target_epsilon: float, target_delta: float, sample_rate: float, steps: int
    ) -> float:
        _check_rate(sample_rate)
        if steps <= 0:
            raise AccountingError(f"steps must be > 0, got {steps}", steps=steps)
        return _smallest_noise(
            lambda sigma: self.epsilon(
                [AccountingStep(noise_multiplier=sigma, sample_rate=sample_rate, steps=steps)],
                delta=target_delta,
            ),
            target_epsilon=target_epsilon,
            start=1.0,
        )


class RdpAccountant(_OpacusAccountant):
    """Rényi-DP accountant (Mironov et al.), converted to (ε, δ); add-or-remove-one."""

    name = "rdp"


class PrvAccountant(_OpacusAccountant):
    """Privacy-random-variable accountant (Gopi et al.): tighter than RDP; add-or-remove-one."""

    name = "prv"


ACCOUNTANTS: dict[str, Callable[[], Accountant]] = {
    PldAccountant.name: PldAccountant,
    RdpAccountant.name: RdpAccountant,
    PrvAccountant.name: PrvAccountant,
}


def get_accountant(name: str) -> Accountant:
    """Return the accountant registered as ``name``; raise on an unknown name."""
    try:
        return ACCOUNTANTS[name]()
    except KeyError:
        raise UnknownNameError("accountant", name, ACCOUNTANTS) from None


DEFAULT_ACCOUNTANT = PrvAccountant.name
"""What federations account with unless told otherwise (add-or-remove-one)."""


def compute_epsilon(
    history: Sequence[AccountingStep], *, delta: float, accountant: str = DEFAULT_ACCOUNTANT
) -> float:
    """ε at ``delta`` after ``history``, with the named accountant.

    Results are cached by the merged history: a round's projected ε is the next
    round's spent ε, and PRV accounting costs a few hundred milliseconds a call.
    """
    return _cached_epsilon(tuple(merge_history(history)), delta, accountant)


@functools.lru_cache(maxsize=4096)
def _cached_epsilon(history: tuple[AccountingStep, ...], delta: float, accountant: str) -> float:
    key = _disk_key("epsilon", [_step_key(step) for step in history], delta, accountant)
    cached = _disk_get(key)
    if cached is not None:
        return cached
    epsilon = get_accountant(accountant).epsilon(history, delta=delta)
    _disk_put(key, epsilon)
    return epsilon


class AccountingCache:
    """ε and σ already computed, kept in an SQLite file beside a node's privacy history.

    A deployed node runs its ClientApp in a fresh process for every message, so the
    in-process caches start cold each time, and PRV accounting costs seconds from cold
    (a σ bisection tens of them). Every result is a pure function of public inputs
    (σ, q, steps, δ, the accountant and its library's version), so a result computed
    once is valid for every later process of the same node. The file lives in the
    node's own state folder, as trusted as the history beside it. A cache that cannot
    be read or written is skipped: the value is computed as if it were absent.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        with self._connect() as connection:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS accounting (key TEXT PRIMARY KEY, value REAL NOT NULL)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=5.0, isolation_level=None)

    def get(self, key: str) -> float | None:
        with self._lock, contextlib.closing(self._connect()) as connection:
            row = connection.execute(
                "SELECT value FROM accounting WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else float(row[0])

    def put(self, key: str, value: float) -> None:
        if not math.isfinite(value):
            return
        with self._lock, contextlib.closing(self._connect()) as connection:
            connection.execute(
                "INSERT OR REPLACE INTO accounting (key, value) VALUES (?, ?)", (key, value)
            )


class _DiskSlot:
    cache: AccountingCache | None = None


_disk = _DiskSlot()


def use_disk_cache(path: Path | None) -> None:
    """Keep computed ε and σ in ``path`` (an SQLite file) as well as in memory; ``None``: don't.

    What a node's ClientApp calls when it has a state folder (``client join``), so that
    each message's fresh process finds what earlier ones computed.
    """
    if path is None:
        _disk.cache = None
        return
    if _disk.cache is not None and _disk.cache.path == path:
        return
    try:
        _disk.cache = AccountingCache(path)
    except sqlite3.Error as exc:
        logger.warning("accounting cache %s unusable, computing from cold: %s", path, exc)
        _disk.cache = None


@functools.cache
def _library_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("opacus")
    except PackageNotFoundError:
        return "?"


def _step_key(step: AccountingStep) -> list[float]:
    return [step.noise_multiplier, step.sample_rate, step.steps]


def _disk_key(kind: str, *parts: object) -> str:
    # json writes floats with repr: keys are exact
    return json.dumps([kind, _library_version(), *parts], separators=(",", ":"))


def _disk_get(key: str) -> float | None:
    cache = _disk.cache
    if cache is None:
        return None
    try:
        return cache.get(key)
    except sqlite3.Error as exc:
        logger.debug("accounting cache read failed: %s", exc)
        return None


def _disk_put(key: str, value: float) -> None:
    cache = _disk.cache
    if cache is None:
        return
    try:
        cache.put(key, value)
    except sqlite3.Error as exc:
        logger.debug("accounting cache write failed: %s", exc)


def noise_multiplier_for(
    *,
    target_epsilon: float,
    target_delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = DEFAULT_ACCOUNTANT,
    reserved: Sequence[AccountingStep] = (),
) -> float:
    """σ such that ``steps`` steps at ``sample_rate`` spend at most ``target_epsilon``.

    ``reserved`` are releases the same data will also go through (a noisy reference
    profile after the last round, say): σ is then the smallest, to 0.1%, whose steps
    composed with them stay under ``target_epsilon``, so that those releases still fit
    in the budget when their turn comes.
    """
    key = _disk_key(
        "sigma",
        target_epsilon,
        target_delta,
        sample_rate,
        steps,
        accountant,
        [_step_key(step) for step in reserved],
    )
    cached = _disk_get(key)
    if cached is not None:
        return cached
    sigma = _noise_multiplier_for(
        target_epsilon=target_epsilon,
        target_delta=target_delta,
        sample_rate=sample_rate,
        steps=steps,
        accountant=accountant,
        reserved=reserved,
    )
    _disk_put(key, sigma)
    return sigma


def _noise_multiplier_for(
    *,
    target_epsilon: float,
    target_delta: float,
    sample_rate: float,
    steps: int,
    accountant: str,
    reserved: Sequence[AccountingStep],
) -> float:
    sigma = get_accountant(accountant).noise_multiplier(
        target_epsilon=target_epsilon,
        target_delta=target_delta,
        sample_rate=sample_rate,
        steps=steps,
    )
    if not reserved:
        return sigma
    alone = compute_epsilon(reserved, delta=target_delta, accountant=accountant)
    if alone >= target_epsilon:
        raise AccountingError(
            f"the reserved releases alone spend ε={alone:.4g} of the target ε={target_epsilon} "
            f"at δ={target_delta}: nothing is left for training",
            target_epsilon=target_epsilon,
        )

    def spent(noise: float) -> float:
        steps_at = AccountingStep(noise_multiplier=noise, sample_rate=sample_rate, steps=steps)
        return compute_epsilon([steps_at, *reserved], delta=target_delta, accountant=accountant)

    return _smallest_noise(spent, target_epsilon=target_epsilon, start=sigma)


def _smallest_noise(
    spent: Callable[[float], float], *, target_epsilon: float, start: float
) -> float:
    """The smallest σ ≥ ``start`` (to 0.1%) whose ``spent(σ)`` stays under the target."""
    if spent(start) <= target_epsilon:
        return start
    low, high = start, start * 1.25
    while spent(high) > target_epsilon:
        low, high = high, high * 1.5
        if high > 1e4:
            raise AccountingError(
                f"no noise multiplier below 1e4 keeps ε under {target_epsilon}",
                target_epsilon=target_epsilon,
            )
    while high - low > 1e-3 * high:
        middle = (low + high) / 2
        if spent(middle) > target_epsilon:
            low = middle
        else:
            high = middle
    return high


def _check_rate(sample_rate: float) -> None:
    if not 0 < sample_rate <= 1:
        raise AccountingError(
            f"sample rate must be in (0, 1], got {sample_rate}", sample_rate=sample_rate
        )
