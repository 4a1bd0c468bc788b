"""Where an institution keeps its privacy history: across rounds, and across runs.

The history is the list of DP-SGD steps the institution has taken; ε is always
recomputed from it, so it cannot drift from what was really spent.
``StateHistory`` keeps it in Flower's ``context.state`` (one run);
``FileHistory`` in a JSON Lines file on the institution's own disk (every run
that uses the file, across restarts).

A node's history file is keyed by the institution's name and a fingerprint of
its rows (``history_file``): the same data continues its history across runs,
resumes and restarts; a different data file starts a history of its own.
``steps_before_run`` pins, in a run's node state, what was spent before the run
began, so the noise a run derives from the remaining budget stays the same in
every round of it (``continuing_noise_multiplier``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from flwr.app import ConfigRecord, RecordDict

from client.contract.errors import DataError
from privacy.account import HistoryStore
from privacy.accounting import (
    AccountingStep,
    compute_epsilon,
    noise_multiplier_for,
    use_disk_cache,
)
from privacy.errors import ConfigError

_STATE_KEY = "fedwarden.privacy-history"
_RUN_START_KEY = "fedwarden.privacy-history-start"

HISTORY_FOLDER = "privacy-history"
"""Where, inside a node's state folder, its history files live."""

MIN_REMAINING_FRACTION = 0.01
"""An institution with less than this share of its budget left takes part in no more runs."""


class StateHistory(HistoryStore):
    """History in a node's ``context.state`` (kept by Flower across a run's rounds)."""

    def __init__(self, state: RecordDict) -> None:
        self._state = state

    def load(self) -> list[AccountingStep]:
        record = self._state.config_records.get(_STATE_KEY)
        if record is None:
            return []
        sigmas = cast(list[float], record["noise_multiplier"])
        rates = cast(list[float], record["sample_rate"])
        steps = cast(list[int], record["steps"])
        return [
            AccountingStep(noise_multiplier=float(s), sample_rate=float(q), steps=int(t))
            for s, q, t in zip(sigmas, rates, steps, strict=True)
        ]

    def append(self, step: AccountingStep) -> None:
        history = [*self.load(), step]
        self._state.config_records[_STATE_KEY] = ConfigRecord(
            {
                "noise_multiplier": [h.noise_multiplier for h in history],
                "sample_rate": [h.sample_rate for h in history],
                "steps": [h.steps for h in history],
            }
        )


class FileHistory(HistoryStore):
    """History in a JSON Lines file; each append is flushed and fsync'd before training
    results leave the node."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> list[AccountingStep]:
        if not self.path.exists():
            return []
        steps = []
        for number, line in enumerate(self.path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                steps.append(
                    AccountingStep(
                        noise_multiplier=float(data["noise_multiplier"]),
                        sample_rate=float(data["sample_rate"]),
                        steps=int(data["steps"]),
                    )
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(
                    f"privacy history {self.path} is corrupt at line {number}; refusing to "
                    "train without knowing what was spent",
                    path=str(self.path),
                ) from exc
        return steps

    def append(self, step: AccountingStep) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(
            {
                "noise_multiplier": step.noise_multiplier,
                "sample_rate": step.sample_rate,
                "steps": step.steps,
            }
        )
        with self.path.open("a") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())


# ---------------------------------------------------------------------- keys and paths


def file_fingerprint(data_path: str | Path, *, schema_fingerprint: str) -> str:
    """SHA-256 over a data file's bytes and its schema's fingerprint."""
    digest = hashlib.sha256()
    with Path(data_path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return hashlib.sha256(f"{digest.hexdigest()}:{schema_fingerprint}".encode()).hexdigest()


def settings_fingerprint(settings: Mapping[str, Any], *, schema_fingerprint: str) -> str:
    """SHA-256 over the settings that pick an institution's rows (dataset, split, seed)."""
    canonical = json.dumps(dict(settings), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{canonical}:{schema_fingerprint}".encode()).hexdigest()


def history_file(folder: str | Path, *, institution: str, fingerprint: str) -> Path:
    """The history file of ``institution`` with the rows ``fingerprint`` names."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", institution).strip("._") or "institution"
    return Path(folder) / f"{safe}-{fingerprint[:16]}.jsonl"


ACCOUNTING_CACHE = "accounting-cache.sqlite"
"""The node's cache of computed ε and σ, beside its history files."""


def use_accounting_cache(history_path: str | Path) -> None:
    """Keep computed ε and σ in the history folder's ``ACCOUNTING_CACHE`` for this process.

    A deployed node forks a fresh ClientApp process per message: without it each
    training message pays PRV accounting from cold (seconds), and ``client join``'s
    budget line pays it again.
    """
    use_disk_cache(Path(history_path).parent / ACCOUNTING_CACHE)


def ensure_writable(folder: str | Path, *, what: str = "state folder") -> Path:
    """Create ``folder`` if needed and prove a file can be written in it.

    Raises
    ------
    ConfigError
        The folder cannot be created or written: the history could not be kept.
    """
    path = Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"the {what} {path} is not writable ({exc.strerror or exc}); the privacy history "
            "must be kept there: give a writable --state",
            path=str(path),
        ) from exc
    return path


# ---------------------------------------------------------------------- runs that continue


def steps_before_run(history: HistoryStore, state: RecordDict) -> list[AccountingStep]:
    """The steps spent before this run began.

    The first message of a run counts the history and keeps the count in the
    node's run state; every later message of the run reads the same count.
    """
    record = state.config_records.get(_RUN_START_KEY)
    steps = history.load()
    if record is None:
        state.config_records[_RUN_START_KEY] = ConfigRecord({"steps": len(steps)})
        return steps
    return steps[: int(cast(int, record["steps"]))]


def can_spend(*, epsilon_spent: float, epsilon_budget: float) -> bool:
    """Whether enough of the budget is left for another run."""
    return epsilon_budget - epsilon_spent >= MIN_REMAINING_FRACTION * epsilon_budget


@functools.lru_cache(maxsize=64)
def continuing_noise_multiplier(
    *,
    prior: tuple[AccountingStep, ...],
    run_epsilon: float,
    budget_epsilon: float,
    target_delta: float,
    sample_rate: float,
    steps: int,
    accountant: str,
    reserved: tuple[AccountingStep, ...] = (),
) -> float | None:
    """σ for a run that continues a history: it spends ``run_epsilon`` more, within the budget.

    The run's steps, composed with ``prior`` (what was spent before the run) and
    ``reserved`` (releases still to come in the run), stay under
    ``min(spent + run_epsilon, budget_epsilon)``. ``None`` when too little of the
    budget is left (``can_spend``): the institution then refuses the run.
    """
    spent = compute_epsilon(prior, delta=target_delta, accountant=accountant)
    if not can_spend(epsilon_spent=spent, epsilon_budget=budget_epsilon):
        return None
    return noise_multiplier_for(
        target_epsilon=min(spent + run_epsilon, budget_epsilon),
        target_delta=target_delta,
        sample_rate=sample_rate,
        steps=steps,
        accountant=accountant,
        reserved=(*prior, *reserved),
    )
