"""``fedwarden client join``: an institution's Flower SuperNode, with its data and budget.

The node connects to the coordinator over TLS (trusting only the consortium
CA), authenticates with its own key, and carries its own settings in its node
config: where its rows are, its (ε, δ) budget, whether it insists on SecAgg+,
where it keeps its privacy history. The client enforces these whatever the
coordinator asks (see ``client.flower_client``). With ``warm``, the SuperNode
runs in ``process`` isolation beside ``python -m client.warm_exec``, which
forks preloaded ClientApp processes instead of starting fresh ones.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.errors import JoinError
from client.processes import ProcessGroup, child_env, executable
from privacy.envelope import Keyring
from privacy.errors import ConfigError
from privacy.sealed_files import materialized

logger = logging.getLogger(__name__)

_TLS_FAILURE = ("SSL/TLS handshake error", "CERTIFICATE_VERIFY_FAILED")
_REFUSED = ("Failed to activate SuperNode", "No SuperNode found with the given public key")


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
    """

    coordinator: str
    ca_certificate: Path
    node_key: Path
    node_config: Mapping[str, Any] = field(default_factory=dict)
    state_dir: Path = Path(".")
    runtime_port: int = 0
    warm: bool = False

    def check(self) -> None:
        host, _, port = self.coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--coordinator must be HOST:PORT, got {self.coordinator!r}")
        for what, path in (("CA certificate", self.ca_certificate), ("node key", self.node_key)):
            if not path.is_file():
                raise ConfigError(f"the {what} {path} does not exist")
        if self.node_key.stat().st_mode & 0o077:
            logger.warning("the node key %s is readable by others: chmod 600 it", self.node_key)


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
    argv = [
        executable("flower-supernode"),
        "--superlink", settings.coordinator,
        "--root-certificates", str(settings.ca_certificate.resolve()),
        "--auth-supernode-private-key", str((node_key or settings.node_key).resolve()),
        "--node-config", node_config_text(settings.node_config),
        "--host", "127.0.0.1",
        "--port", str(runtime_port),
    ]  # fmt: skip
    if settings.warm:
        argv += ["--isolation", "process"]
    return argv


def warm_executor_argv(*, runtime_port: int, parent_pid: int) -> list[str]:
    return [
        sys.executable, "-m", "client.warm_exec",
        "--appio-api-address", f"127.0.0.1:{runtime_port}",
        "--insecure",
        "--parent-pid", str(parent_pid),
    ]  # fmt: skip


class _Diagnosis:
    """Watches the SuperNode's output for why it could not join."""

    def __init__(self) -> None:
        self.tls_failure = False
        self.refused = False

    def __call__(self, line: str) -> None:
        if any(marker in line for marker in _TLS_FAILURE):
            self.tls_failure = True
        if any(marker in line for marker in _REFUSED):
            self.refused = True


def join(settings: JoinSettings, *, keyring: Keyring | None = None) -> int:
    """Run the SuperNode (and the warm executor) in the foreground until it ends or a signal.

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
            group.start(warm_executor_argv(runtime_port=port, parent_pid=node.pid), env=env)
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
    return code
