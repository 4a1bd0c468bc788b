"""Running the coordinator: the SuperLink started, its node keys pushed, its life audited.

``run_coordinator`` is what ``fedwarden coordinator start`` calls: it starts the
SuperLink (TLS, node authentication, a state database; the Fleet API alone on the
institutions' address, the operator APIs on the operator address) as a child process,
waits until it answers, registers the store's node keys with it, audits the
start and the stop, and returns the SuperLink's exit code. While it runs, a
revoked node key is unregistered from the SuperLink within a second.

The SuperLink runs with ``--isolation process``: its ServerApps are started by
``server.engine.fast_serverapp`` (Flower's SuperExec loop; each ServerApp is
Flower's ``flwr-serverapp`` with its grid polling on a 50 ms-1 s back-off
instead of every 3 s), a child of this process connected to the SuperLink's
ServerAppIo API at ``serverappio_address(settings)``.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from client.contract.processes import ProcessGroup, child_env
from privacy.sealed_files import materialized
from server.engine.fast_serverapp import executor_argv
from server.engine.flwr_cli import flwr_home, write_connection
from server.engine.superlink import (
    RefusalWatcher,
    SuperLinkSettings,
    push_node_keys,
    superlink_argv,
    wait_until_ready,
)
from server.store import audit, revocation
from server.store.engine import Store
from server.store_url import write_store_url

logger = logging.getLogger(__name__)

_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def serverappio_address(settings: SuperLinkSettings) -> str:
    """Where the ServerApp executor reaches the SuperLink's ServerAppIo (Runtime) API.

    The one place that says so: the operator address (never the Fleet address, which
    refuses every API but the Fleet's), reached on the loopback when it listens on
    every address.
    """
    host = _LOOPBACK.get(settings.operator_host, settings.operator_host)
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{settings.operator_port}"


class _StopRequested(BaseException):
    """SIGINT or SIGTERM arrived while the coordinator was starting."""


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    raise _StopRequested(signum)


def run_coordinator(
    *, settings: SuperLinkSettings, store: Store, on_ready: Callable[[int], None]
) -> int:
    """Run the SuperLink in the foreground until it stops; ``on_ready(nodes)`` once it serves.

    A failure during start-up stops the SuperLink before the error propagates. SIGINT and
    SIGTERM are handled from the first moment: one that arrives during start-up stops what
    has started and returns 0 (as one that arrives later does).
    """
    handled = (signal.SIGINT, signal.SIGTERM)
    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, _stop_on_signal) for s in handled} if in_main else {}
    try:
        return _run(settings=settings, store=store, on_ready=on_ready)
    except _StopRequested as stop:
        logger.warning("stopped by signal %s during start-up", stop.args[0])
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run(*, settings: SuperLinkSettings, store: Store, on_ready: Callable[[int], None]) -> int:
    settings.check()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    url = store.engine.url.render_as_string(hide_password=False)
    write_connection(
        state_dir=settings.state_dir,
        address=settings.operator_address,  # never the Fleet address: it refuses operators
        ca_certificate=settings.ca_certificate,
    )
    # The store's URL (a password, for PostgreSQL) reaches the ServerApp through a 0600 file
    # named in the run config, never through the environment every child process inherits.
    write_store_url(state_dir=settings.state_dir, url=url)
    env = child_env(FLWR_HOME=str(flwr_home(settings.state_dir)))
    for secret in ("FEDWARDEN_DATABASE_URL", "FEDWARDEN_API_KEY"):
        env.pop(secret, None)
    group = ProcessGroup()
    watcher = RefusalWatcher(store)
    # A sealed TLS key is decrypted to memory-backed storage only until the SuperLink has it.
    with materialized(
        settings.pki_dir / "server.key", keyring=store.keyring, what="the TLS key"
    ) as key_file:
        superlink = group.start(
            [*superlink_argv(settings, key_file=key_file), "--isolation", "process"],
            env=env,
            log_path=settings.state_dir / "superlink.log",
            on_line=watcher,
        )
        try:
            wait_until_ready(settings)
            group.start(
                executor_argv(
                    runtime_api_address=serverappio_address(settings),
                    ca_certificate=settings.ca_certificate,
                    parent_pid=superlink.pid,
                    wake=settings.reply_wake,
                ),
                env=env,
                log_path=settings.state_dir / "serverapp.log",
            )
        except BaseException:
            group.stop()
            raise
    try:
        nodes = push_node_keys(store=store, state_dir=settings.state_dir)
        with store.session() as session:
            audit.append(
                session, actor="system", action="coordinator.start",
                target=f"superlink:{settings.address}",
                details={
                    "nodes": len(nodes), "tls": True, "node_auth": True,
                    "operator_address": settings.operator_address,
                },
            )  # fmt: skip
    except BaseException:
        group.stop()
        raise
    stop = threading.Event()
    syncer = threading.Thread(
        target=_sync_revocations,
        args=(store, settings.state_dir, stop),
        name="node-key-sync",
        daemon=True,
    )
    try:
        on_ready(len(nodes))
        syncer.start()
        code = group.wait()  # it handles SIGINT and SIGTERM itself from here
    except BaseException:
        group.stop()
        raise
    finally:
        stop.set()
        if syncer.is_alive():
            syncer.join(timeout=10)
        watcher.flush()
    with store.session() as session:
        audit.append(
            session, actor="system", action="coordinator.stop",
            target=f"superlink:{settings.address}",
            details={
                "exit_code": code, "refused_nodes": watcher.refusals,
                "refused_operator_requests": watcher.off_fleet,
            },
        )  # fmt: skip
    return code


def _sync_revocations(store: Store, state_dir: Path, stop: threading.Event) -> None:
    """Unregister revoked node keys from the running SuperLink as soon as they are revoked.

    Watches the store's revocation generation (one read a second) and pushes the
    node keys again when it moves, so a revoked node's next request is refused.
    """
    seen = revocation.read_generation(store.engine)
    while not stop.wait(1.0):
        try:
            current = revocation.read_generation(store.engine)
            if current != seen:
                push_node_keys(store=store, state_dir=state_dir)
                seen = current
        except Exception:  # the SuperLink or the store is briefly away: try next second
            logger.exception("could not bring the SuperLink's node keys up to date")
