"""The coordinator's Flower ServerApp.

``app`` is what ``flwr run`` and a SuperLink load (``server.app:app``): it reads
the run's settings from ``context.run_config`` (through ``server.config``, the
one reader of it), records the run in the governance store the settings name,
writes the ledger to their output folder when given, and on resume carries the
run on from its last checkpoint. ``create_server_app`` builds
the same app with settings and observers supplied in-process (the simulation).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from privacy.redaction import install_log_redaction
from server.checkpoint_format import RunCheckpoint, open_checkpoint
from server.config import FederationSettings, federation_settings_from_run_config
from server.errors import FederationError
from server.federation import Federation
from server.ledger import LedgerObserver
from server.run_events import RoundRecord, RunObserver, RunResult, RunStart

logger = logging.getLogger(__name__)


class LoggingObserver:
    """One log line per round: what an operator tails from the SuperLink's log."""

    def on_run_start(self, start: RunStart) -> None:
        logger.info(
            "run starts at round %d with %s (%s)",
            start.first_round,
            ", ".join(i.name for i in start.institutions),
            "SecAgg+" if start.secure else "updates in the clear",
        )

    def on_round_end(self, record: RoundRecord) -> None:
        logger.info(
            "round %d: loss %s accuracy %s ε %s dropped %s refused %s",
            record.round,
            record.loss,
            record.accuracy,
            record.epsilon,
            sorted(record.dropped),
            sorted(record.refused),
        )

    def on_run_end(self, result: RunResult) -> None:
        logger.info("run finished: %s", result.stopped_reason)


def create_server_app(
    *,
    settings: FederationSettings | None = None,
    observers: Sequence[RunObserver] | None = None,
    results: list[RunResult] | None = None,
) -> ServerApp:
    """A ServerApp.

    ``settings`` (a simulation's, translated once) replace the context's run
    config; ``observers`` replace the default ones and the store; ``results``
    receives the outcome.
    """
    install_log_redaction()  # the ServerApp process logs no key, token or password
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run = settings or federation_settings_from_run_config(context.run_config)
        if observers is not None:
            result = Federation(run, observers).run(grid, context)
        else:
            result = _run_recorded(grid, context, run)
        if results is not None:
            results.append(result)

    return app


def _run_recorded(grid: Grid, context: Context, settings: FederationSettings) -> RunResult:
    """Run with the default observers and, where a store is configured, record the run."""
    observers: list[RunObserver] = [LoggingObserver()]
    record = settings.record
    if record.output_dir is not None:
        observers.append(LedgerObserver(record.output_dir))
    if record.database_url is None:
        logger.warning("no database-url: this run is not recorded in a governance store")
        return Federation(settings, observers).run(grid, context)

    from privacy.keyring import load_keyring
    from server.store import repository as repo
    from server.store.recorder import StoreRecorder

    recorder = StoreRecorder.open(
        repo.StoreSettings.load(record.database_url),
        run_name=record.run_name,
        run_id=record.run_id,
        keyring=load_keyring(),  # FEDWARDEN_KEYRING / FEDWARDEN_KEK of the coordinator
    )
    try:
        resume = _checkpoint(recorder) if record.resume else None
        federation = Federation(settings, [*observers, recorder])
        return federation.run(grid, context, resume=resume)
    except BaseException as exc:
        recorder.mark_failed(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        recorder.close()


def _checkpoint(recorder: Any) -> RunCheckpoint:
    from server.store import repository as repo

    with recorder.store.session() as session:
        actor = repo.service_principal(session=session)
        row = repo.latest_checkpoint(session=session, actor=actor, run_id=recorder.run_id)
        if row is None:
            raise FederationError(f"run {recorder.run_id} has no checkpoint to resume from")
        return open_checkpoint(
            row.blob, keyring=recorder.store.keyring, what=f"checkpoint of run {recorder.run_id}"
        )


app = create_server_app()
