"""The coordinator's SuperLink: started with TLS, node authentication and a state database.

``SuperLinkSettings`` says where the PKI and the state live and where to
listen (institutions' Fleet address, the operator's address); ``superlink_argv``
is the command line of fedwarden's SuperLink entry point (Flower's SuperLink
with only the Fleet API on the Fleet address, see ``superlink_entry``);
``wait_until_ready`` waits for its TLS endpoints; ``push_node_keys`` registers
every active node key from the store with it (and unregisters revoked ones it
registered before); ``RefusalWatcher`` reads the SuperLink's log and audits each
node it turns away, and each request for an operator's API that reached the
Fleet address (``superlink.refused``).
"""

from __future__ import annotations

import ast
import base64
import json
import logging
import re
import socket
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from privacy.errors import ConfigError
from privacy.pki import fingerprint, openssh_from_pem
from server.engine.flwr_cli import run_flwr_json
from server.errors import FlowerCliError, ServerError
from server.store import audit
from server.store.engine import Store

logger = logging.getLogger(__name__)

_REFUSED = re.compile(
    r"\[/v1/fleet/[\w-]+\]\[ApiError:(?P<code>\d+)\].*?public key: "
    r"(?P<pem>b'-----BEGIN PUBLIC KEY-----"
    r".*?-----END PUBLIC KEY-----\\n')(?:, exception: (?P<reason>.*))?"
)
_KEY_IN_USE = "Public key already in use"
_NODE_AUTH_REFUSED = re.compile(
    r"fedwarden-node-refused peer=(?P<peer>\S+) path=(?P<path>\S+) signer=(?P<key>\S+)"
    r"(?: verified=(?P<verified>yes|no))?"
)
"""The SuperLink entry's line for a Fleet request that Flower's node authentication
answered 401: a node whose key was revoked or unregistered during its session (its
activation, refused with the key in Flower's own line, is audited from that line)."""
_OFF_FLEET = re.compile(
    r"fedwarden-refused peer=(?P<peer>\S+) method=(?P<method>\S+) path=(?P<path>\S+)"
)


@dataclass(frozen=True, kw_only=True)
class SuperLinkSettings:
    """Where a coordinator's SuperLink keeps its files and listens.

    Parameters
    ----------
    pki_dir : Path
        Holds ``ca.crt``, ``server.crt`` and ``server.key`` (``fedwarden pki init``).
    state_dir : Path
        The SuperLink's state database, its log, ``FLWR_HOME`` and run records.
    host : str
        The address institutions reach (the Fleet API only).
    port : int
        The Fleet API's port.
    operator_host : str
        Where the Control and ServerAppIo APIs listen (with the Fleet API too):
        the operator's ``flwr``/``fedwarden run`` and the ServerApp's executor.
        Loopback unless the operator works from another machine.
    operator_port : int
        Their port; not the Fleet port.
    """

    pki_dir: Path
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 9093
    operator_host: str = "127.0.0.1"
    operator_port: int = 9091

    @property
    def address(self) -> str:
        """The Fleet address (institutions' ``--coordinator``)."""
        return _join(self.host, self.port)

    @property
    def operator_address(self) -> str:
        """The Control and ServerAppIo address (``fedwarden run``, the ServerApp's executor)."""
        return _join(self.operator_host, self.operator_port)

    @property
    def ca_certificate(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def reply_wake(self) -> Path:
        """The FIFO through which the SuperLink wakes its ServerApps when a reply is in."""
        return self.state_dir.resolve() / "replies-wake.fifo"

    def check(self) -> None:
        """``ConfigError`` if a PKI file is missing."""
        for name in ("ca.crt", "server.crt", "server.key"):
            if not (self.pki_dir / name).is_file():
                raise ConfigError(
                    f"{self.pki_dir / name} is missing: "
                    f"run `fedwarden pki init --out {self.pki_dir}`"
                )
        for what, port in (("port", self.port), ("operator port", self.operator_port)):
            if not 0 < port < 65536:
                raise ConfigError(f"{what} must be in 1..65535, got {port}")
        if self.port == self.operator_port:
            raise ConfigError(
                f"the operator port and the Fleet port must differ (both {self.port}): "
                "institutions must not reach the Control and ServerAppIo APIs"
            )


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def superlink_argv(
    settings: SuperLinkSettings, *, program: str | None = None, key_file: Path | None = None
) -> list[str]:
    """Flower's SuperLink with TLS, node authentication, a state database, no ``uv sync``,
    its operator APIs on the operator address and only the Fleet API on the Fleet address.

    ``program``: the entry point (default: ``python -m server.engine.superlink_entry``);
    ``key_file``: the TLS key's plaintext where ``server.key`` is sealed.
    """
    pki = settings.pki_dir.resolve()
    entry = [program] if program else [sys.executable, "-m", "server.engine.superlink_entry"]
    return [
        *entry,
        "--fleet-host", settings.host,
        "--fleet-port", str(settings.port),
        "--wake-fifo", str(settings.reply_wake),
        "--ssl-ca-certfile", str(pki / "ca.crt"),
        "--ssl-certfile", str(pki / "server.crt"),
        "--ssl-keyfile", str(key_file or pki / "server.key"),
        "--enable-supernode-auth",
        "--database", str(settings.state_dir.resolve() / "superlink.db"),
        "--disable-runtime-dependency-installation",
        "--host", settings.operator_host,
        "--port", str(settings.operator_port),
    ]  # fmt: skip


def wait_until_ready(settings: SuperLinkSettings, *, timeout_s: float = 60.0) -> None:
    """Return once the SuperLink completes a TLS handshake verified by the CA, on the
    Fleet address and on the operator address.

    A SuperLink listening on every address (``0.0.0.0``, ``::``) is reached on the
    loopback, and its certificate, which names the addresses institutions use, is
    checked against the CA only.
    """
    deadline = time.monotonic() + timeout_s
    for host, port in ((settings.host, settings.port),
                       (settings.operator_host, settings.operator_port)):  # fmt: skip
        _wait_for_tls(settings, host=host, port=port, deadline=deadline, timeout_s=timeout_s)


def _wait_for_tls(
    settings: SuperLinkSettings, *, host: str, port: int, deadline: float, timeout_s: float
) -> None:
    context = ssl.create_default_context(cafile=str(settings.ca_certificate))
    if host in ("0.0.0.0", "::", ""):
        host = "::1" if host == "::" else "127.0.0.1"
        context.check_hostname = False  # the chain is still verified (CERT_REQUIRED)
    while True:
        try:
            with (
                socket.create_connection((host, port), timeout=2.0) as raw,
                context.wrap_socket(raw, server_hostname=host),
            ):
                return
        except ssl.SSLCertVerificationError as exc:
            raise ServerError(
                f"the SuperLink's TLS certificate does not verify for {_join(host, port)} "
                f"(`fedwarden pki init --host` must name it): {exc}"
            ) from exc
        except OSError:  # refused, reset or cut short while it starts: try again
            if time.monotonic() > deadline:
                raise ServerError(
                    f"the SuperLink did not come up on {_join(host, port)} in {timeout_s:g} s"
                ) from None
            time.sleep(0.5)


def push_node_keys(*, store: Store, state_dir: Path) -> dict[str, str]:
    """Register every active node key with the SuperLink; unregister revoked ones.

    Returns the fingerprint → Flower node id map (kept in ``<state>/node-ids.json``).
    """
    from server.store.nodes import active_node_keys

    path = state_dir / "node-ids.json"
    known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    with store.session() as session:
        active = active_node_keys(session=session)
    wanted = {key.fingerprint for key in active}
    for digest, node_id in sorted(known.items()):
        if digest not in wanted:
            run_flwr_json("supernode", "unregister", node_id, state_dir=state_dir)
            logger.info("unregistered node %s (key %s is revoked)", node_id, digest)
            del known[digest]
    for key in active:
        if key.fingerprint in known:
            continue
        with tempfile.TemporaryDirectory() as folder:
            public = Path(folder) / "node.pub"
            public.write_text(f"{key.public_key} fedwarden:{key.institution}\n")
            try:
                reply = run_flwr_json(
                    "supernode", "register", str(public), "--name", key.institution[:64],
                    state_dir=state_dir,
                )  # fmt: skip
            except FlowerCliError as exc:
                if _KEY_IN_USE not in str(exc):
                    raise
                logger.info(
                    "node key %s of %s is registered already", key.fingerprint, key.institution
                )
                continue
        known[key.fingerprint] = str(reply["node-id"])
        logger.info("registered %s's node key %s", key.institution, key.fingerprint)
    path.write_text(json.dumps(known, indent=2, sort_keys=True))
    return known


class RefusalWatcher:
    """Reads SuperLink log lines; audits each node it refuses as ``node.refused``, and each
    operator-API request that reached the Fleet address as ``superlink.refused``.

    A flood of requests refused mid-session or off the Fleet API is audited in bounded
    form: the first ``per_interval``
    requests of each ``interval_s`` one row each, the rest as one row with their
    count (written when the interval ends, or by ``flush``).
    """

    def __init__(self, store: Store, *, per_interval: int = 20, interval_s: float = 60.0) -> None:
        self.store = store
        self.refusals = 0
        self.off_fleet = 0
        self.per_interval = per_interval
        self.interval_s = interval_s
        self._window_start = time.monotonic()
        self._in_window = 0
        self._suppressed = 0

    def __call__(self, line: str) -> None:
        if "fedwarden-refused" in line:
            self._off_fleet(line)
            return
        if "fedwarden-node-refused" in line:
            self._node_auth(line)
            return
        match = _REFUSED.search(line)
        if match is None:
            return
        try:
            pem = ast.literal_eval(match["pem"])
            public_key: str | None = openssh_from_pem(pem)
        except (ValueError, SyntaxError, ConfigError):
            public_key = None
        reason = (match["reason"] or f"ApiError {match['code']}").strip()
        from server.store.nodes import record_node_refusal

        with self.store.session() as session:
            record_node_refusal(session=session, reason=reason, public_key=public_key)
        self.refusals += 1
        logger.warning("refused a node: %s", reason)

    def _node_auth(self, line: str) -> None:
        match = _NODE_AUTH_REFUSED.search(line)
        if match is None:
            return
        from urllib.parse import unquote

        from server.store.nodes import record_node_refusal

        self.refusals += 1
        if not self._admit():
            return
        try:
            public_key: str | None = openssh_from_pem(base64.b64decode(match["key"]))
        except (ValueError, ConfigError):
            public_key = None
        path = unquote(match["path"])[:200]
        reason = f"the SuperLink refused {path}: the node's key is revoked or unregistered"
        if match["verified"] != "yes":  # claimed, not proven: not charged to the key's holder
            claimed = fingerprint(public_key) if public_key is not None else "none"
            reason = (
                f"the SuperLink refused {path}: its signature does not verify under the "
                f"public key it claims ({claimed})"
            )
            public_key = None
        with self.store.session() as session:
            record_node_refusal(
                session=session, reason=reason, public_key=public_key,
                peer=unquote(match["peer"])[:100],
            )  # fmt: skip
        logger.warning("refused a node at %s: %s", unquote(match["peer"]), path)

    def _off_fleet(self, line: str) -> None:
        match = _OFF_FLEET.search(line)
        if match is None:
            return
        from urllib.parse import unquote

        self.off_fleet += 1
        if not self._admit():
            return
        details = {
            "peer": unquote(match["peer"]),
            "method": unquote(match["method"]),
            "path": unquote(match["path"])[:200],
            "reason": "only the Fleet API is served on the Fleet address",
        }
        with self.store.session() as session:
            audit.append(
                session, actor="anonymous", action="superlink.refused",
                target=f"peer:{details['peer']}", outcome="denied", details=details,
            )  # fmt: skip
        logger.warning(
            "refused %s %s from %s on the Fleet address",
            details["method"], details["path"], details["peer"],
        )  # fmt: skip

    def _admit(self) -> bool:
        """Whether this refusal gets a row of its own (else it is counted for ``flush``)."""
        now = time.monotonic()
        if now - self._window_start >= self.interval_s:
            self.flush()
            self._window_start, self._in_window = now, 0
        if self._in_window >= self.per_interval:
            self._suppressed += 1
            return False
        self._in_window += 1
        return True

    def flush(self) -> None:
        """Audit the refusals held back in the current interval as one counted row."""
        if not self._suppressed:
            return
        with self.store.session() as session:
            audit.append(
                session, actor="anonymous", action="superlink.refused", target="peer:many",
                outcome="denied",
                details={"suppressed": self._suppressed, "interval_s": self.interval_s},
            )  # fmt: skip
        self._suppressed = 0
