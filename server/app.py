"""The coordinator's Flower ServerApp.

``app`` is what ``flwr run`` and a SuperLink load (``server.app:app``): it reads
the run's settings from ``context.run_config``, records the run in the
governance store named by ``database-url`` (or ``FEDWARDEN_DATABASE_URL``),
writes the ledger to ``output-dir`` when given, and with ``resume = true``
carries on run ``run-id`` from its last checkpoint. ``create_server_app`` builds
the same app with settings and observers supplied in-process (the simulation).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from privacy.redaction import install_log_redaction
from server.checkpoints import RunCheckpoint, open_checkpoint
from server.config import FederationSettings, federation_settings_from_run_config
from server.errors import FederationError
from server.ledger import LedgerObserver
from server.orchestrator import Federation
from server.records import RoundRecord, RunObserver, RunResult, RunStart

logger = logging.getLogger(__name__)

ObserverFactory = Callable[[FederationSettings, Mapping[str, Any]], Sequence[RunObserver]]


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
    run_config: Mapping[str, Any] | None = None,
    observers: ObserverFactory | None = None,
    results: list[RunResult] | None = None,
) -> ServerApp:
    """A ServerApp; ``run_config`` overrides the context's, ``results`` receives the outcome."""
    install_log_redaction()  # the ServerApp process logs no key, token or password
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        merged = {**dict(context.run_config), **dict(run_config or {})}
        settings = federation_settings_from_run_config(merged)
        if observers is not None:
            result = Federation(settings, observers(settings, merged), run_config=merged).run(
                grid, context
            )
        else:
            result = _run_recorded(grid, context, settings, merged)
        if results is not None:
            results.append(result)

    return app


def _run_recorded(
    grid: Grid, context: Context, settings: FederationSettings, run_config: dict[str, Any]
) -> RunResult:
    """Run with the default observers and, where a store is configured, record the run."""
    observers: list[RunObserver] = [LoggingObserver()]
    output = str(run_config.get("output-dir", "") or "")
    if output:
        observers.append(LedgerObserver(Path(output)))
    url = str(run_config.get("database-url", "") or os.environ.get("FEDWARDEN_DATABASE_URL", ""))
    run_id = str(run_config.get("run-id", "") or "") or None
    if not url:
        if run_config.get("resume"):
            raise FederationError("resuming a run needs the store that holds its checkpoints")
        logger.warning("no database-url: this run is not recorded in a governance store")
        return Federation(settings, observers, run_config=run_config).run(grid, context)

    from privacy.keyring import load_keyring
    from server.store import repository as repo
    from server.store.recorder import StoreRecorder

    recorder = StoreRecorder.open(
        repo.StoreSettings.load(url),
        run_name=str(run_config.get("run-name", "") or "federation"),
        run_id=run_id,
        keyring=load_keyring(),  # FEDWARDEN_KEYRING / FEDWARDEN_KEK of the coordinator
    )
    try:
        resume = _checkpoint(recorder, run_config) if run_config.get("resume") else None
        federation = Federation(settings, [*observers, recorder], run_config=run_config)
        return federation.run(grid, context, resume=resume)
    except BaseException as exc:
        recorder.mark_failed(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        recorder.close()


def _checkpoint(recorder: Any, run_config: Mapping[str, Any]) -> RunCheckpoint:
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
