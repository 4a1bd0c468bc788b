"""Running the coordinator: the SuperLink started, its node keys pushed, its life audited.

``run_coordinator`` is what ``fedwarden coordinator start`` calls: it starts the
SuperLink (TLS, node authentication, a state database; the Fleet API alone on the
institutions' address, the operator APIs on the operator address) as a child process,
waits until it answers, registers the store's node keys with it, audits the
start and the stop, and returns the SuperLink's exit code. While it runs, a
revoked node key is unregistered from the SuperLink within a second.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from client.contract.processes import ProcessGroup, child_env
from privacy.sealed_files import materialized
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


def run_coordinator(
    *, settings: SuperLinkSettings, store: Store, on_ready: Callable[[int], None]
) -> int:
    """Run the SuperLink in the foreground until it stops; ``on_ready(nodes)`` once it serves.

    A failure during start-up stops the SuperLink before the error propagates.
    """
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
        group.start(
            superlink_argv(settings, key_file=key_file),
            env=env,
            log_path=settings.state_dir / "superlink.log",
            on_line=watcher,
        )
        try:
            wait_until_ready(settings)
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
    on_ready(len(nodes))
    stop = threading.Event()
    syncer = threading.Thread(
        target=_sync_revocations,
        args=(store, settings.state_dir, stop),
        name="node-key-sync",
        daemon=True,
    )
    syncer.start()
    try:
        code = group.wait()
    finally:
        stop.set()
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
