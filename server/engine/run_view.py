"""What an operator sees of a deployment run: its rounds as the store records them.

The ServerApp records each round in the coordinator's store (``server.store.runs``);
``recorded_rounds`` reads them back as the ``RoundRecord`` s a simulation prints
(loss, accuracy, each institution's ε after the round from the ledger, who
refused, was rejected or dropped), and ``follow`` calls back once per new round
until the run is over. Plain reads: the command that calls them is audited by
``authorize_operator``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select

from server.run_events import RoundRecord
from server.store.engine import Store
from server.store.models import Institution, LedgerEntry, Round, Run
from server.store.runs import match_run


@dataclass(kw_only=True)
class RunProgress:
    """A run as the store has it now."""

    run_id: str
    status: str
    num_rounds: int | None
    stopped_reason: str | None = None
    rounds: list[RoundRecord] = field(default_factory=list)


def recorded_rounds(store: Store, run_id: str) -> RunProgress | None:
    """The run ``run_id`` (or a unique prefix of it) and its recorded rounds; ``None`` if the
    ServerApp has not recorded it yet."""
    with store.session() as session:
        run = match_run(session, run_id)
        if run is None:
            return None
        rows = list(
            session.scalars(select(Round).where(Round.run_id == run.id).order_by(Round.round))
        )
        ledger = session.execute(
            select(Institution.name, LedgerEntry.round, LedgerEntry.epsilon)
            .join(Institution, Institution.id == LedgerEntry.institution_id)
            .where(LedgerEntry.run_id == run.id, LedgerEntry.kind == "train")
            .order_by(LedgerEntry.round)
        ).all()
        progress = RunProgress(
            run_id=run.id,
            status=run.status,
            num_rounds=_num_rounds(run),
            stopped_reason=run.stopped_reason,
        )
    epsilon: dict[str, float] = {}
    entries = list(ledger)
    for row in rows:
        for name, ledger_round, value in entries:
            if ledger_round <= row.round:
                epsilon[name] = value
        progress.rounds.append(
            RoundRecord(
                round=row.round,
                loss=row.loss,
                accuracy=row.accuracy,
                accuracy_by_institution=dict(row.accuracy_by_institution),
                epsilon=dict(epsilon),
                participants=list(row.participants),
                refused=dict(row.refused),
                rejected=dict(row.rejected),
                dropped=dict(row.dropped),
                aggregated=row.aggregated,
                secagg=row.secagg,
                central_epsilon=row.central_epsilon,
                duration_s=row.duration_s,
            )
        )
    return progress


PLAN_ROUNDS_KEY = "fw.num-rounds"
"""How the training plan's ``num_rounds`` is recorded (``client.contract.plan``'s wire key)."""


def _num_rounds(run: Run) -> int | None:
    """The planned rounds: the recorded settings' plan (``fw.num-rounds``), else a raw run
    config's ``num-server-rounds``."""
    plan = run.config.get("plan")
    value = plan.get(PLAN_ROUNDS_KEY) if isinstance(plan, dict) else None
    if value is None:
        value = run.config.get("num-server-rounds", run.config.get("num_rounds"))
    return int(value) if isinstance(value, int | float | str) and str(value).isdigit() else None


def phase_of(progress: RunProgress | None) -> str:
    """The phase a run is in, as far as the store shows it: ``start-up`` (the ServerApp's
    start, the census and the summary: the run is recorded once they are done), ``round
    k/N``, ``profile`` (every round recorded, the run not over) or its final status."""
    if progress is None:
        return "start-up"
    if progress.status != "running":
        return progress.status
    done = progress.rounds[-1].round if progress.rounds else 0
    if progress.num_rounds is not None and done >= progress.num_rounds:
        return "profile"
    total = progress.num_rounds if progress.num_rounds is not None else "?"
    return f"round {done + 1}/{total}"


def follow(
    store: Store,
    run_id: str,
    *,
    on_round: Callable[[RoundRecord, int | None], None],
    finished: Callable[[], bool],
    on_phase: Callable[[str], None] | None = None,
    poll_s: float = 1.0,
    shown: int = 0,
) -> RunProgress | None:
    """Call ``on_round`` for each round recorded after the first ``shown``, and ``on_phase``
    when the run's phase (``phase_of``) changes, until ``finished()`` (then once more, for
    the last rounds); the run as it ended."""
    progress = None
    phase = ""
    while True:
        done = finished()
        progress = recorded_rounds(store, run_id) or progress
        if progress is not None:
            for record in progress.rounds:
                if record.round > shown:
                    on_round(record, progress.num_rounds)
                    shown = record.round
        if on_phase is not None and not done and (now := phase_of(progress)) != phase:
            phase = now
            on_phase(phase)
        if done:
            return progress
        time.sleep(poll_s)


def export_hint(run_id: str) -> str:
    """The command that exports the run's model."""
    return f"fedwarden export --run {run_id[:8]} --name MODEL"
