"""The privacy ledger: what each institution spent, round by round.

Each entry records one release of an institution's rows: a round's DP-SGD
parameters (steps, sample rate, noise multiplier, clipping norm), or a noisy
preprocessing summary or reference profile (one full-data Gaussian step, its
sensitivity as the clipping norm), and the institution's cumulative ε after it,
at δ: the composition of every release it made, its noisy row counts included.
One entry per (institution, round, release): a round reported again (a retried
round after a restart) replaces its entry instead of adding a second one, so ε
is never counted twice.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class LedgerRecord:
    """One institution's round."""

    institution: str
    round: int
    steps: int
    sample_rate: float
    noise_multiplier: float
    max_grad_norm: float
    epsilon: float
    delta: float
    refused: bool = False
    reason: str = ""
    release: str = "training"
    """``training``, ``summary`` or ``profile``."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if math.isinf(self.epsilon):
            data["epsilon"] = "inf"
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LedgerRecord:
        return cls(**{**data, "epsilon": float(data["epsilon"])})


class PrivacyLedger:
    """Entries by (institution, round), in the order first recorded."""

    def __init__(self, entries: Iterable[LedgerRecord] = ()) -> None:
        self._entries: dict[tuple[str, int, str], LedgerRecord] = {}
        for entry in entries:
            self.record(entry)

    def record(self, entry: LedgerRecord) -> None:
        key = (entry.institution, entry.round, entry.release)
        if key in self._entries and self._entries[key] != entry:
            logger.warning(
                "round %d of %s reported again: replacing its ledger entry (ε %.4g -> %.4g)",
                entry.round,
                entry.institution,
                self._entries[key].epsilon,
                entry.epsilon,
            )
        self._entries[key] = entry

    def entries(self, institution: str | None = None) -> list[LedgerRecord]:
        return [e for e in self._entries.values() if institution in (None, e.institution)]

    def institutions(self) -> list[str]:
        return sorted({e.institution for e in self._entries.values()})

    def spent(self, institution: str) -> float:
        """The institution's cumulative ε after its latest release (0 before any): every
        entry carries the composition so far, which only grows."""
        return max((e.epsilon for e in self.entries(institution)), default=0.0)

    def write_jsonl(self, path: Path) -> None:
        """Write every entry as one JSON line (atomically: a crash leaves the old file)."""
        temporary = path.with_suffix(path.suffix + ".tmp")
        lines = [json.dumps(e.to_dict(), sort_keys=True) for e in self.entries()]
        temporary.write_text("".join(line + "\n" for line in lines))
        temporary.replace(path)

    @classmethod
    def read_jsonl(cls, path: Path) -> PrivacyLedger:
        text = path.read_text()
        return cls(LedgerRecord.from_dict(json.loads(line)) for line in text.splitlines() if line)
