"""The coordinator's SuperLink: started with TLS, node authentication and a state database.

``SuperLinkSettings`` says where the PKI and the state live and where to
listen; ``superlink_argv`` is the ``flower-superlink`` command line;
``wait_until_ready`` waits for its TLS endpoint; ``push_node_keys`` registers
every active node key from the store with it (and unregisters revoked ones it
registered before); ``RefusalWatcher`` reads the SuperLink's log and audits each
node it turns away.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import socket
import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from privacy.errors import ConfigError
from privacy.pki import openssh_from_pem
from server.engine.flwr_cli import run_flwr_json
from server.errors import FlowerCliError, ServerError
from server.store.engine import Store

logger = logging.getLogger(__name__)

_REFUSED = re.compile(
    r"\[/v1/fleet/[\w-]+\]\[ApiError:(?P<code>\d+)\].*?public key: "
    r"(?P<pem>b'-----BEGIN PUBLIC KEY-----"
    r".*?-----END PUBLIC KEY-----\\n')(?:, exception: (?P<reason>.*))?"
)
_KEY_IN_USE = "Public key already in use"


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
        The address to listen on.
    port : int
        The one port of the Fleet, Control and ServerAppIo HTTP APIs.
    """

    pki_dir: Path
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 9093

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def ca_certificate(self) -> Path:
        return self.pki_dir / "ca.crt"

    def check(self) -> None:
        """``ConfigError`` if a PKI file is missing."""
        for name in ("ca.crt", "server.crt", "server.key"):
            if not (self.pki_dir / name).is_file():
                raise ConfigError(
                    f"{self.pki_dir / name} is missing: "
                    f"run `fedwarden pki init --out {self.pki_dir}`"
                )
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in 1..65535, got {self.port}")


def superlink_argv(
    settings: SuperLinkSettings, *, program: str, key_file: Path | None = None
) -> list[str]:
    """``flower-superlink`` with TLS, node authentication, a state database, no ``uv sync``
    (``key_file``: the TLS key's plaintext where ``server.key`` is sealed)."""
    pki = settings.pki_dir.resolve()
    return [
        program,
        "--ssl-ca-certfile", str(pki / "ca.crt"),
        "--ssl-certfile", str(pki / "server.crt"),
        "--ssl-keyfile", str(key_file or pki / "server.key"),
        "--enable-supernode-auth",
        "--database", str(settings.state_dir.resolve() / "superlink.db"),
        "--disable-runtime-dependency-installation",
        "--host", settings.host,
        "--port", str(settings.port),
    ]  # fmt: skip


def wait_until_ready(settings: SuperLinkSettings, *, timeout_s: float = 60.0) -> None:
    """Return once the SuperLink completes a TLS handshake verified by the CA.

    A SuperLink listening on every address (``0.0.0.0``, ``::``) is reached on the
    loopback, and its certificate, which names the addresses institutions use, is
    checked against the CA only.
    """
    context = ssl.create_default_context(cafile=str(settings.ca_certificate))
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = "::1" if host == "::" else "127.0.0.1"
        context.check_hostname = False  # the chain is still verified (CERT_REQUIRED)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with (
                socket.create_connection((host, settings.port), timeout=2.0) as raw,
                context.wrap_socket(raw, server_hostname=host),
            ):
                return
        except ssl.SSLCertVerificationError as exc:
            raise ServerError(f"the SuperLink's TLS certificate does not verify: {exc}") from exc
        except OSError:  # refused, reset or cut short while it starts: try again
            if time.monotonic() > deadline:
                raise ServerError(
                    f"the SuperLink did not come up on {settings.address} in {timeout_s:g} s"
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
    """Reads SuperLink log lines; audits each node it refuses as ``node.refused``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.refusals = 0

    def __call__(self, line: str) -> None:
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
