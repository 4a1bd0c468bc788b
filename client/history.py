"""Where an institution keeps its privacy history: across rounds, and across runs.

The history is the list of DP-SGD steps the institution has taken; ε is always
recomputed from it, so it cannot drift from what was really spent.
``StateHistory`` keeps it in Flower's ``context.state`` (one run);
``FileHistory`` in a JSON Lines file on the institution's own disk (every run
that uses the file, across restarts).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import cast

from flwr.app import ConfigRecord, RecordDict

from client.contract.errors import DataError
from privacy.account import HistoryStore
from privacy.accounting import AccountingStep

_STATE_KEY = "fedwarden.privacy-history"


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
