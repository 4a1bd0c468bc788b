"""What a run reports as it goes: the census, each round's record, and the result.

Observers (``RunObserver``) receive these: the CLI's progress bar, the run's
summary file, the governance store. They are plain data, safe to serialise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from client.contract.profile import ReferenceProfile
from client.contract.report import FitReport
from server.checkpoint_format import RunCheckpoint


@dataclass(frozen=True, kw_only=True)
class Institution:
    """One institution as the census saw it."""

    node_id: int
    name: str
    num_train: int
    num_test: int
    budget_epsilon: float
    budget_delta: float
    require_secagg: bool


@dataclass(frozen=True, kw_only=True)
class RunStart:
    """What is known once the census and the federated summary are done."""

    institutions: list[Institution]
    settings: dict[str, Any]
    secure: bool
    first_round: int = 1
    preprocessing: str = ""
    model_spec: dict[str, Any] = field(default_factory=dict)
    summary_reports: list[FitReport] = field(default_factory=list)
    """Each institution's account of its noisy preprocessing summary (none on a resume)."""


@dataclass(frozen=True, kw_only=True)
class RoundRecord:
    """One round, as the coordinator saw it.

    ``epsilon`` holds every institution's ε after the round (the last value it
    reported, for one that did not train this round).
    """

    round: int
    loss: float | None
    accuracy: float | None
    accuracy_by_institution: dict[str, float]
    epsilon: dict[str, float]
    participants: list[str]
    refused: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    reports: list[FitReport] = field(default_factory=list)
    aggregated: bool = True
    discarded: str | None = None
    secagg: dict[str, Any] | None = None
    central_epsilon: float | None = None
    duration_s: float = 0.0
    checkpoint: RunCheckpoint | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(replace(self, checkpoint=None))
        data.pop("checkpoint")
        data["reports"] = [json_safe(asdict(r)) for r in self.reports]
        safe: dict[str, Any] = json_safe(data)
        return safe


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """The run's end: the global model, why the run stopped, and the reference profile.

    ``profile`` is the federation's reference profile of the training rows and of
    the final model's predictions (``None`` when the run computed none);
    ``profile_reports`` each institution's account of it (DP noise and ε, or why
    it refused).
    """

    weights: list[np.ndarray]
    model_spec: dict[str, Any]
    preprocessing: str
    rounds: list[RoundRecord]
    stopped_reason: str
    profile: ReferenceProfile | None = field(default=None, repr=False, compare=False)
    profile_reports: list[FitReport] = field(default_factory=list)
    summary_reports: list[FitReport] = field(default_factory=list)


class RunObserver(Protocol):
    """Receives a run's progress; implementations must not raise into the run.

    An observer may also define ``on_phase(phase: str)``: it is then told when the
    run enters a phase (``census``, ``summary``, ``round k/N``, ``profile``; see
    ``notify_phase``).
    """

    def on_run_start(self, start: RunStart) -> None: ...

    def on_round_end(self, record: RoundRecord) -> None: ...

    def on_run_end(self, result: RunResult) -> None: ...


def notify_phase(observers: Iterable[object], phase: str) -> None:
    """Tell the observers that define ``on_phase`` that the run entered ``phase``."""
    for observer in observers:
        on_phase = getattr(observer, "on_phase", None)
        if callable(on_phase):
            on_phase(phase)


def json_safe(data: Any) -> Any:
    """JSON has no Infinity: write infinite ε as the string "inf"."""
    if isinstance(data, dict):
        return {k: json_safe(v) for k, v in data.items()}
    if isinstance(data, list):
        return [json_safe(v) for v in data]
    if isinstance(data, float) and not math.isfinite(data):
        return "nan" if math.isnan(data) else ("inf" if data > 0 else "-inf")
    return data
