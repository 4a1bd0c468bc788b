"""The ``flwr`` command line, run with the coordinator's own ``FLWR_HOME``.

``fedwarden coordinator start`` writes ``<state>/flwr/config.toml`` naming its
SuperLink (address and the consortium CA); every ``flwr`` call fedwarden makes
runs with ``FLWR_HOME`` pointing there, so no user-wide Flower config is read
or changed.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

from client.contract.processes import child_env, executable
from server.errors import FlowerCliError

logger = logging.getLogger(__name__)

CONNECTION = "fedwarden"


def flwr_home(state_dir: Path) -> Path:
    """The ``FLWR_HOME`` of the coordinator whose state is in ``state_dir``."""
    return state_dir.resolve() / "flwr"


def write_connection(*, state_dir: Path, address: str, ca_certificate: Path) -> Path:
    """Write ``config.toml`` naming the SuperLink at ``address`` (TLS, trusting the CA)."""
    home = flwr_home(state_dir)
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    path.write_text(
        "[superlink]\n"
        f'default = "{CONNECTION}"\n\n'
        f"[superlink.{CONNECTION}]\n"
        f'address = "{address}"\n'
        f'root-certificates = "{ca_certificate.resolve()}"\n'
    )
    return path


def flwr_argv(*args: str) -> list[str]:
    return [executable("flwr"), *args]


def run_flwr(
    *args: str, state_dir: Path, timeout_s: float = 60.0, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``flwr ARGS`` against the coordinator; its completed process (not checked)."""
    if not (flwr_home(state_dir) / "config.toml").exists():
        raise FlowerCliError(
            f"no coordinator state in {state_dir}: start one with `fedwarden coordinator start`"
        )
    try:
        return subprocess.run(
            flwr_argv(*args),
            env=child_env(FLWR_HOME=str(flwr_home(state_dir))),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise FlowerCliError(
            f"`flwr {' '.join(args)}` did not answer in {timeout_s:g} s: is the coordinator up?"
        ) from None


def run_flwr_json(*args: str, state_dir: Path, timeout_s: float = 60.0) -> dict[str, Any]:
    """``flwr ARGS --format json``, parsed; ``FlowerCliError`` unless it says success."""
    done = run_flwr(*args, "--format", "json", state_dir=state_dir, timeout_s=timeout_s)
    try:
        payload: dict[str, Any] = json.loads(done.stdout[done.stdout.index("{") :])
    except ValueError:
        raise FlowerCliError(
            f"`flwr {' '.join(args)}` failed: {(done.stderr or done.stdout).strip()[-500:]}"
        ) from None
    if not payload.get("success", False):
        raise FlowerCliError(
            f"`flwr {' '.join(args)}` failed: {payload.get('error-message', payload)}",
            error=str(payload.get("error-message", "")),
        )
    return payload
