"""The simulation's view: a progress bar that names its phase, and one line per round.

On a terminal the bar shows the phase it is in (start-up, census, summary,
round k, profile, baseline, export); written to a file or a pipe there is no
bar and no colour, only one plain line per phase and per round.
"""

from __future__ import annotations

import math

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from server.run_events import RoundRecord, RunResult, RunStart

PHASES = (
    "start-up", "census", "summary", "initial model", "round", "profile", "baseline", "export"
)  # fmt: skip
"""The phases of a simulation, in order (``round`` repeats, as ``round k/N``)."""


class ProgressObserver:
    """Shows the phase the run is in, and rounds as they finish: loss, accuracy, ε."""

    def __init__(self, console: Console, *, num_rounds: int) -> None:
        self.console = console
        self.num_rounds = num_rounds
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.description:<13}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task("start-up", total=num_rounds)

    def __enter__(self) -> ProgressObserver:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def on_phase(self, phase: str) -> None:
        """The run entered ``phase`` (one of ``PHASES``; rounds as ``round k/N``)."""
        if self.live:
            self.progress.update(self.task, description=phase)
        else:
            self.console.print(f"… {phase}", highlight=False)

    def on_run_start(self, start: RunStart) -> None:
        names = ", ".join(
            f"{i.name} ({i.num_train} train / {i.num_test} test)" for i in start.institutions
        )
        mode = "SecAgg+" if start.secure else "[yellow]updates in the clear[/]"
        self.console.print(f"census: {names}; aggregation: {mode}")

    def on_round_end(self, record: RoundRecord) -> None:
        self.progress.advance(self.task)
        self.console.print(format_round(record, self.num_rounds))

    def on_run_end(self, result: RunResult) -> None:
        self.progress.update(self.task, completed=self.num_rounds)


def format_round(record: RoundRecord, num_rounds: int) -> str:
    """One line: round, loss, accuracy, ε per institution, and who did not take part."""
    loss = f"{record.loss:.4f}" if record.loss is not None else "  n/a "
    accuracy = f"{record.accuracy:.3f}" if record.accuracy is not None else " n/a "
    line = (
        f"round {record.round:>2}/{num_rounds}  loss {loss}  acc {accuracy}  ε {_epsilons(record)}"
    )
    notes = [f"{name} refused" for name in record.refused]
    notes += [f"{name} rejected" for name in record.rejected]
    notes += [f"{name} dropped" for name in record.dropped]
    if notes:
        line += "  [yellow](" + "; ".join(notes) + ")[/]"
    return line


def _epsilons(record: RoundRecord) -> str:
    values = record.epsilon
    if len(values) <= 4:
        return " ".join(f"{name} {_eps(value)}" for name, value in sorted(values.items()))
    low, high = min(values.values()), max(values.values())
    return f"{_eps(low)}–{_eps(high)} across {len(values)} institutions"


def _eps(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.3f}"
