"""``fedwarden client join``: an institution's Flower SuperNode, with its data and budget.

The node connects to the coordinator over TLS (trusting only the consortium
CA), authenticates with its own key, and carries its own settings in its node
config: where its rows are, its (ε, δ) budget, whether it insists on SecAgg+,
where it keeps its privacy history. The client enforces these whatever the
coordinator asks (see ``client.flower_client``). With ``warm``, the SuperNode
runs in ``process`` isolation beside ``python -m client.warm_exec``, which
forks preloaded ClientApp processes instead of starting fresh ones. With
``fast_poll`` (the default) the SuperNode is Flower's own, started through
``python -m client.fast_poll``: its idle poll backs off from 50 ms to 1 s
instead of sleeping 3 s, and it wakes the executor through a FIFO in the state
folder (``WAKE_FIFO``) whenever it stores a message, so the executor asks for the
task at once and otherwise polls at most once a second.

The node's privacy history is always kept: in its state folder, in a file
keyed by the institution and a fingerprint of its data (``node_history``), so
every run, resume and restart on the same rows continues the same history.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.contract.errors import DataError
from client.contract.processes import ProcessGroup, child_env, executable
from client.errors import JoinError
from client.history import (
    HISTORY_FOLDER,
    FileHistory,
    ensure_writable,
    file_fingerprint,
    history_file,
    settings_fingerprint,
    use_accounting_cache,
)
from privacy.account import InstitutionAccount
from privacy.config import PrivacyBudget
from privacy.envelope import Keyring
from privacy.errors import ConfigError
from privacy.sealed_files import materialized

logger = logging.getLogger(__name__)


_TLS_FAILURE = ("SSL/TLS handshake error", "CERTIFICATE_VERIFY_FAILED")
_UNREACHABLE = ("Failed to initialize the connection to the SuperLink", "Giving up reconnection")
_REFUSED = ("Failed to activate SuperNode", "No SuperNode found with the given public key")
_ENDED = "SuperNode terminated gracefully"
"""What Flower's SuperNode says as it leaves on a signal: one it sends itself when the
SuperLink answers its heartbeat with 401 (its key was revoked or unregistered)."""


@dataclass(frozen=True, kw_only=True)
class JoinSettings:
    """What a node needs to join a federation.

    Parameters
    ----------
    coordinator : str
        The SuperLink's ``HOST:PORT``.
    ca_certificate : Path
        The consortium CA that signed the coordinator's certificate.
    node_key : Path
        The node's private key (``fedwarden pki node``).
    node_config : Mapping
        The node config (data, budget, SecAgg requirement, history).
    state_dir : Path
        The SuperNode's ``FLWR_HOME`` (apps it installs).
    runtime_port : int
        Port of the SuperNode's local Runtime API (0: a free one).
    warm : bool
        Fork preloaded ClientApp processes (``client.warm_exec``).
    fast_poll : bool
        Run the SuperNode through ``client.fast_poll`` (back-off polls, not 3 s).
    connect_attempts : int
        Tries to reach the coordinator before giving up (Flower's ``--max-retries``),
        when joining and when the connection is lost.
    connect_wait_s : float
        Seconds of failed tries before giving up (Flower's ``--max-wait-time``).
    """

    coordinator: str
    ca_certificate: Path
    node_key: Path
    node_config: Mapping[str, Any] = field(default_factory=dict)
    state_dir: Path = Path(".")
    runtime_port: int = 0
    warm: bool = False
    fast_poll: bool = True
    connect_attempts: int = 20
    connect_wait_s: float = 300.0

    def check(self) -> None:
        host, _, port = self.coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--coordinator must be HOST:PORT, got {self.coordinator!r}")
        if self.connect_attempts < 1 or self.connect_wait_s <= 0:
            raise ConfigError("connect attempts and wait must be positive")
        for what, path in (("CA certificate", self.ca_certificate), ("node key", self.node_key)):
            if not path.is_file():
                raise ConfigError(f"the {what} {path} does not exist")
        if self.node_key.stat().st_mode & 0o077:
            logger.warning("the node key %s is readable by others: chmod 600 it", self.node_key)
        ensure_writable(self.state_dir)


def default_state_dir() -> Path:
    """A node's state folder unless ``--state`` says otherwise: ``~/.fedwarden/node``."""
    return Path.home() / ".fedwarden" / "node"


@dataclass(frozen=True, kw_only=True)
class NodeHistory:
    """The history file a node keeps, and what it already holds."""

    path: Path
    institution: str
    budget: PrivacyBudget
    epsilon_spent: float


def history_key(node_config: Mapping[str, Any]) -> tuple[str, str]:
    """``(institution, fingerprint)`` of the rows a node config names.

    For a data file: SHA-256 of its bytes and of its schema's fingerprint. For an
    embedded dataset: its name, the institution's index, the seed and the schema.

    Raises
    ------
    DataError
        The data file cannot be read.
    """
    if "data-path" in node_config:
        from client.contract.schema import load_schema

        if "schema-path" not in node_config:
            raise ConfigError("node config has data-path but no schema-path")
        data = Path(str(node_config["data-path"]))
        schema = load_schema(str(node_config["schema-path"]))
        try:
            fingerprint = file_fingerprint(data, schema_fingerprint=schema.fingerprint())
        except OSError as exc:
            raise DataError(f"cannot read the data file {data}: {exc}", path=str(data)) from exc
        return str(node_config.get("institution", data.stem)), fingerprint
    from client.data import load_node_data

    rows = load_node_data(node_config)
    key = {k: node_config.get(k) for k in ("dataset", "partition-id", "seed")}
    return rows.name, settings_fingerprint(key, schema_fingerprint=rows.schema.fingerprint())


def node_history(
    node_config: Mapping[str, Any], *, state_dir: Path, override: Path | None = None
) -> NodeHistory:
    """Where the node keeps its privacy history, and the ε it already holds.

    The file is ``STATE/privacy-history/<institution>-<fingerprint>.jsonl``
    unless ``override`` names one.

    Raises
    ------
    ConfigError
        The state folder (or the override's folder) is not writable.
    DataError
        The data file cannot be read, or the history is corrupt.
    """
    ensure_writable(state_dir)
    from client.node import NodeSettings

    settings = NodeSettings.from_node_config(node_config)
    institution, fingerprint = history_key(node_config)
    if override is not None:
        path = override.expanduser().resolve()
        ensure_writable(path.parent, what="history file's folder")
    else:
        folder = ensure_writable(state_dir / HISTORY_FOLDER, what="history folder")
        path = history_file(folder, institution=institution, fingerprint=fingerprint).resolve()
    account = InstitutionAccount(
        institution=institution,
        budget=settings.budget,
        history=FileHistory(path),
        accountant="prv",
    )
    return NodeHistory(
        path=path,
        institution=institution,
        budget=settings.budget,
        epsilon_spent=account.epsilon(),
    )


def node_config_text(config: Mapping[str, Any]) -> str:
    """Flower's ``--node-config`` form: ``key=value`` pairs, strings quoted."""
    parts = []
    for key, value in config.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = repr(value)
        else:
            text = json.dumps(str(value))
        parts.append(f"{key}={text}")
    return " ".join(parts)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def supernode_argv(
    settings: JoinSettings, *, runtime_port: int, node_key: Path | None = None
) -> list[str]:
    """``flower-supernode`` for ``settings`` (``node_key``: the key's plaintext if it is sealed)."""
    program = (
        [sys.executable, "-m", "client.fast_poll"]
        if settings.fast_poll
        else [executable("flower-supernode")]
    )
    if settings.fast_poll and settings.warm:
        program += ["--wake", str(wake_fifo(settings))]
    argv = [
        *program,
        "--superlink", settings.coordinator,
        "--root-certificates", str(settings.ca_certificate.resolve()),
        "--auth-supernode-private-key", str((node_key or settings.node_key).resolve()),
        "--node-config", node_config_text(settings.node_config),
        "--host", "127.0.0.1",
        "--port", str(runtime_port),
        "--max-retries", str(settings.connect_attempts),
        "--max-wait-time", str(settings.connect_wait_s),
    ]  # fmt: skip
    if settings.warm:
        argv += ["--isolation", "process"]
    return argv


WAKE_FIFO = "exec-wake.fifo"
"""FIFO in the node's state folder: its SuperNode wakes its warm executor through it."""


def wake_fifo(settings: JoinSettings) -> Path:
    return (settings.state_dir / WAKE_FIFO).resolve()


def warm_executor_argv(
    *, runtime_port: int, parent_pid: int, wake: Path | None = None
) -> list[str]:
    wake_args = ["--wake", str(wake)] if wake is not None else []
    return [
        sys.executable, "-m", "client.warm_exec",
        "--appio-api-address", f"127.0.0.1:{runtime_port}",
        "--insecure",
        "--parent-pid", str(parent_pid),
        # The node's own installed ClientApp, imported once (not the coordinator's FAB copy)
        "--preload", "client.app",
        *wake_args,
    ]  # fmt: skip


BudgetCallback = Callable[[NodeHistory], None]
"""Told the node's privacy history after each change (``client join`` prints it)."""


class BudgetWatcher:
    """Watches the node's history file; after each change, the ε it holds against its budget."""

    def __init__(
        self, node_config: Mapping[str, Any], *, on_change: BudgetCallback, poll_s: float = 2.0
    ) -> None:
        self.node_config = dict(node_config)
        self.path = Path(str(node_config["history-path"]))
        self.on_change = on_change
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._seen = self._stamp()
        self._thread = threading.Thread(target=self._run, name="budget-watcher", daemon=True)

    def _stamp(self) -> tuple[float, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime, stat.st_size

    def check(self) -> NodeHistory | None:
        """The history now, if it changed since the last check."""
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            return None
        self._seen = stamp
        from client.node import NodeSettings

        use_accounting_cache(self.path)  # the ClientApp computed this ε already

        settings = NodeSettings.from_node_config(self.node_config)
        account = InstitutionAccount(
            institution=str(self.node_config.get("institution", "")),
            budget=settings.budget,
            history=FileHistory(self.path),
            accountant="prv",
        )
        return NodeHistory(
            path=self.path,
            institution=account.institution,
            budget=settings.budget,
            epsilon_spent=account.epsilon(),
        )

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                changed = self.check()
            except Exception:  # a half-written line: read it next time
                logger.debug("could not read the privacy history yet", exc_info=True)
                continue
            if changed is not None:
                self.on_change(changed)

    def __enter__(self) -> BudgetWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class _Diagnosis:
    """Watches the SuperNode's output for why it could not join."""

    def __init__(self) -> None:
        self.tls_failure = False
        self.refused = False
        self.unreachable = False
        self.ended = False
        self.reason = ""

    def __call__(self, line: str) -> None:
        if any(marker in line for marker in _UNREACHABLE):
            self.unreachable = True
        elif self.unreachable and not self.reason and line.strip().startswith("["):
            self.reason = line.strip()  # Flower's next line: "[Errno 111] Connection refused"
        if any(marker in line for marker in _TLS_FAILURE):
            self.tls_failure = True
        if any(marker in line for marker in _REFUSED):
            self.refused = True
        if _ENDED in line:
            self.ended = True


def join(
    settings: JoinSettings,
    *,
    keyring: Keyring | None = None,
    on_budget: BudgetCallback | None = None,
) -> int:
    """Run the SuperNode (and the warm executor) in the foreground until it ends or a signal;
    ``on_budget`` is told the node's ε after each round that spends some.

    Raises
    ------
    JoinError
        The coordinator's certificate does not verify with the CA, or it refused the key.
    """
    settings.check()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    port = settings.runtime_port or free_port()
    env = child_env(FLWR_HOME=str(settings.state_dir.resolve()))
    group = ProcessGroup()
    diagnosis = _Diagnosis()
    with materialized(settings.node_key, keyring=keyring, what="the node key") as node_key:
        node = group.start(
            supernode_argv(settings, runtime_port=port, node_key=node_key),
            env=env,
            on_line=diagnosis,
        )
        if settings.warm:
            wake = wake_fifo(settings) if settings.fast_poll else None
            group.start(
                warm_executor_argv(runtime_port=port, parent_pid=node.pid, wake=wake), env=env
            )
        watching = on_budget is not None and "history-path" in settings.node_config
        with (
            BudgetWatcher(settings.node_config, on_change=on_budget)  # type: ignore[arg-type]
            if watching
            else contextlib.nullcontext()
        ):
            code = group.wait()
    if diagnosis.tls_failure:
        raise JoinError(
            f"the coordinator at {settings.coordinator} presented a certificate that the CA "
            f"{settings.ca_certificate} does not verify: not joining",
            coordinator=settings.coordinator,
        )
    if diagnosis.refused:
        raise JoinError(
            f"the coordinator at {settings.coordinator} refused this node's key "
            f"{settings.node_key}: is it registered (`fedwarden pki node`)?",
            coordinator=settings.coordinator,
        )
    if code == 0 and diagnosis.ended and not group.signalled:
        # Nobody stopped this node: the SuperLink refused it mid-session and Flower's
        # SuperNode, told 401, stopped itself.
        raise JoinError(
            f"the coordinator at {settings.coordinator} refused this node's key "
            f"{settings.node_key} during its session (revoked or unregistered): the node left",
            coordinator=settings.coordinator,
        )
    if diagnosis.unreachable:
        raise JoinError(
            f"could not reach the coordinator at {settings.coordinator} after "
            f"{settings.connect_attempts} attempts or {settings.connect_wait_s:g} s"
            + (f" ({diagnosis.reason})" if diagnosis.reason else "")
            + ": is the address right, and is the coordinator running?",
            coordinator=settings.coordinator,
        )
    return code
