"""What an institution reports to the coordinator after a round (in the clear).

Only what the release manifest (``privacy.releases``) declares leaves: the
published (noisy) row count, the privacy numbers the coordinator keeps in its
ledger, and ``train_loss`` as NaN (the training loss is never sent). The update
itself travels separately and, with SecAgg+, masked.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from privacy.errors import ConfigError
from privacy.ledger import LedgerRecord


@dataclass(frozen=True, kw_only=True)
class FitReport:
    """An institution's account of one training round (or of its refusal)."""

    institution: str
    round: int
    refused: bool = False
    reason: str = ""
    num_examples: int = 0
    train_loss: float = math.nan
    dp: bool = True
    epsilon: float = 0.0
    epsilon_next: float = 0.0
    epsilon_budget: float = math.inf
    delta: float = 0.0
    noise_multiplier: float = 0.0
    sample_rate: float = 0.0
    steps: int = 0
    max_grad_norm: float = 0.0
    update_norm: float = 0.0
    update_clipped: bool = False
    schema_fingerprint: str = ""

    def to_ledger_record(self, *, release: str = "training") -> LedgerRecord:
        """What this report puts in the privacy ledger (a refused round took no steps)."""
        return LedgerRecord(
            release=release,
            institution=self.institution,
            round=self.round,
            steps=0 if self.refused else self.steps,
            sample_rate=self.sample_rate,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            epsilon=self.epsilon,
            delta=self.delta,
            refused=self.refused,
            reason=self.reason,
        )

    def to_metrics(self) -> dict[str, Any]:
        return {f"fw.{key}": value for key, value in asdict(self).items()}

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any]) -> FitReport:
        """Parse a report; raise ``ConfigError`` if a key is missing or of the wrong type."""
        values: dict[str, Any] = {}
        for field in fields(cls):
            key = f"fw.{field.name}"
            if key not in metrics:
                raise ConfigError(f"fit report lacks {key!r}")
            values[field.name] = metrics[key]
        try:
            return cls(
                **{
                    **values,
                    "round": int(values["round"]),
                    "num_examples": int(values["num_examples"]),
                    "steps": int(values["steps"]),
                    "refused": bool(values["refused"]),
                    "dp": bool(values["dp"]),
                    "update_clipped": bool(values["update_clipped"]),
                }
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"fit report is malformed: {exc}") from exc
