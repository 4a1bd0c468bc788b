"""``StoreRecorder``: the run observer that keeps a run's record in the governance store.

It writes the run when it starts, each round with its privacy ledger entries
as it ends, and the outcome, each in one transaction and each audited under
the principal that started the run (the coordinator's ``coordinator`` service
account unless another is named). Recording a round again replaces it, so a
retried round is never counted twice.

Unlike observers that only display progress, this one fails closed: if the
store cannot record a round, the error reaches the run and stops it, because
training on without a privacy ledger would spend ε that nobody can account for.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from privacy.envelope import Keyring
from server.checkpoint_format import seal_checkpoint
from server.errors import NotFoundError
from server.run_events import RoundRecord, RunResult, RunStart
from server.store import audit, checkpoints, governance, rbac, runs
from server.store.engine import Store, open_store
from server.store.models import AuditEvent, Principal, Run
from server.store.settings import StoreSettings

logger = logging.getLogger(__name__)


class StoreRecorder:
    """Records one run in the store; implements ``server.run_events.RunObserver``.

    Parameters
    ----------
    store : Store
        An open store.
    run_name : str
        A human name for the run.
    started_by : str, optional
        The principal that starts the run; it needs ``run:start``. Default: the
        ``coordinator`` service account (created, as an operator, on first use).
    run_id : str, optional
        The run's id; a fresh UUID by default.
    owns_store : bool
        Dispose of ``store`` in ``close`` (true when ``open`` made it).
    """

    def __init__(
        self,
        store: Store,
        *,
        run_name: str,
        started_by: str | None = None,
        run_id: str | None = None,
        owns_store: bool = False,
    ) -> None:
        self.store = store
        self.run_name = run_name
        self.run_id = run_id or str(uuid.uuid4())
        self._owns_store = owns_store
        # The audit seq of this recorder's own run.start or run.resume: a later one means
        # another coordinator has taken the run over since (see ``mark_failed``).
        self._claim: int | None = None
        with store.session() as session:
            actor = self._resolve(session, started_by)
            rbac.authorize(
                session, principal=actor, permission="run:start", target=f"run:{self.run_id}"
            )
            self.actor_name = actor.name

    @classmethod
    def open(
        cls,
        settings: StoreSettings | str,
        *,
        run_name: str,
        started_by: str | None = None,
        run_id: str | None = None,
        keyring: Keyring | None = None,
    ) -> StoreRecorder:
        """Open (creating or upgrading) the store at ``settings`` and a recorder on it
        (checkpoints sealed with ``keyring`` when one is given)."""
        store = open_store(settings, keyring=keyring)
        try:
            return cls(
                store, run_name=run_name, started_by=started_by, run_id=run_id, owns_store=True
            )
        except BaseException:
            store.dispose()
            raise

    def on_run_start(self, start: RunStart) -> None:
        """Create the run (status ``running``) and add its institutions by name; a resumed
        run (``start.first_round`` > 1) is marked running again instead."""
        settings = {**start.settings, "secure": start.secure}
        with self.store.session() as session:
            if start.first_round > 1 and session.get(Run, self.run_id) is not None:
                runs.resume_run(
                    session=session,
                    actor=self._actor(session),
                    run_id=self.run_id,
                    from_round=start.first_round - 1,
                )
                session.flush()
                self._claim = _last_claim(session, self.run_id)
                return
            runs.start_run(
                session=session,
                actor=self._actor(session),
                name=self.run_name,
                config=settings,
                institutions=[institution.name for institution in start.institutions],
                run_id=self.run_id,
            )
            session.flush()
            self._claim = _last_claim(session, self.run_id)
        logger.info("recording run %s (%s) in %s", self.run_id, self.run_name, self.store.url)

    def on_round_end(self, record: RoundRecord) -> None:
        """Write the round, its dropouts, its ledger entries and its checkpoint, in one
        transaction (replacing an earlier write of the same round)."""
        with self.store.session() as session:
            actor = self._actor(session)
            runs.record_round(session=session, actor=actor, run_id=self.run_id, record=record)
            if record.discarded is not None:
                audit.append(
                    session,
                    actor=actor.name,
                    action="round.discarded",
                    target=f"run:{self.run_id}",
                    outcome="failure",
                    details={"round": record.round, "reason": record.discarded},
                )
            if record.checkpoint is not None:
                checkpoints.save_checkpoint(
                    session=session,
                    actor=actor,
                    run_id=self.run_id,
                    round=record.round,
                    blob=seal_checkpoint(record.checkpoint, keyring=self.store.keyring),
                )

    def on_impersonation(self, *, node_id: int, claimed: str, registered: str) -> None:
        """Audit a node refused for claiming another institution than its key's
        (``node.impersonation``, outcome ``denied``)."""
        with self.store.session() as session:
            audit.append(
                session,
                actor=self._actor(session).name,
                action="node.impersonation",
                target=f"node:{registered}",
                outcome="denied",
                details={
                    "run_id": self.run_id, "node_id": node_id,
                    "claimed": claimed, "registered": registered,
                },
            )  # fmt: skip

    def on_run_end(self, result: RunResult) -> None:
        """Keep the run's reference profile (and the ε spent on it), then mark the run
        ``completed`` with the reason it stopped."""
        if result.profile is not None or result.profile_reports:
            with self.store.session() as session:
                runs.record_profile(
                    session=session,
                    actor=self._actor(session),
                    run_id=self.run_id,
                    profile=result.profile.to_dict() if result.profile is not None else None,
                    reports=result.profile_reports,
                )
        self._end("completed", result.stopped_reason)

    def mark_failed(self, reason: str) -> None:
        """Mark the run ``failed`` (recording it first if it failed before it started).

        A run an operator stopped (``run stop``) stays ``stopped``: its ServerApp then
        fails as Flower ends it. A coordinator killed mid-run can leave its ServerApp alive
        for a few seconds; if another coordinator has resumed the run since, the run is
        no longer this recorder's to fail, and it is left alone (logged).
        """
        with self.store.session() as session:
            run = session.get(Run, self.run_id)
            if run is not None and run.status == "stopped":
                logger.info("run %s was stopped by an operator; not failing it (%s)",
                            self.run_id, reason)  # fmt: skip
                return
        if self._claim is not None:
            with self.store.session() as session:
                latest = _last_claim(session, self.run_id)
            if latest is not None and latest > self._claim:
                logger.warning(
                    "run %s was resumed elsewhere since this coordinator took it; "
                    "not marking it failed (%s)",
                    self.run_id,
                    reason,
                )
                return
        self._end("failed", reason)

    def close(self) -> None:
        """Release the store's connections if this recorder opened it."""
        if self._owns_store:
            self.store.dispose()

    def __enter__(self) -> StoreRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _end(self, status: str, reason: str) -> None:
        with self.store.session() as session:
            actor = self._actor(session)
            if session.get(Run, self.run_id) is None:
                runs.start_run(
                    session=session, actor=actor, name=self.run_name, config={}, run_id=self.run_id
                )
            runs.end_run(
                session=session, actor=actor, run_id=self.run_id, status=status, reason=reason
            )

    def _actor(self, session: Session) -> Principal:
        found = governance.find_principal(session=session, name=self.actor_name)
        if found is None:
            raise NotFoundError(f"principal {self.actor_name!r} is gone", principal=self.actor_name)
        return found

    def _resolve(self, session: Session, started_by: str | None) -> Principal:
        if started_by is None:
            return governance.service_principal(session=session)
        found = governance.find_principal(session=session, name=started_by)
        if found is None:
            error = NotFoundError(f"no principal called {started_by!r}", principal=started_by)
            raise audit.record_refusal(
                session,
                error=error,
                actor=started_by,
                action="run.start",
                target=f"run:{self.run_id}",
                outcome="error",
            )
        return found


def _last_claim(session: Session, run_id: str) -> int | None:
    """The seq of the newest ``run.start`` or ``run.resume`` audit event of the run."""
    seq: int | None = session.scalar(
        select(func.max(AuditEvent.seq)).where(
            AuditEvent.target == f"run:{run_id}",
            AuditEvent.action.in_(("run.start", "run.resume")),
        )
    )
    return seq
