"""A real coordinator: institutions' address serves the Fleet API only.

``fedwarden coordinator start`` runs Flower's SuperLink through fedwarden's entry
point. A client that holds the consortium's ``ca.crt`` (and even a registered
node key: the refusal comes before any authentication) and reaches the Fleet
port can neither list nor start runs, with the real ``flwr ls``/``flwr run``
or by hand; each refusal is audited (``superlink.refused``). The operator's
``fedwarden run list`` works through the operator address. Slow (a SuperLink).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from client.join import free_port
from server.engine.flwr_cli import CONNECTION, write_connection
from server.store.engine import open_store
from server.store.models import AuditEvent

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]


def fedwarden(*args: str) -> list[str]:
    return [sys.executable, "-m", "simulations.cli", *args]


def cli(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        fedwarden(*args), capture_output=True, text=True, env=env, timeout=120, check=False,
        cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@dataclass
class Coordinator:
    root: Path
    url: str
    operator_key: str
    fleet_port: int
    operator_port: int

    @property
    def ca(self) -> Path:
        return self.root / "pki" / "ca.crt"

    def audited(self, action: str) -> list[AuditEvent]:
        store = open_store(self.url, upgrade=False)
        try:
            with store.session() as session:
                return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))
        finally:
            store.dispose()


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    root = tmp_path_factory.mktemp("doors")
    url = f"sqlite:///{root / 'store.db'}"
    admin = cli("admin", "init", "--database-url", url).strip().splitlines()[-1]
    operator = cli("admin", "enroll", "ops", "operator", "--database-url", url)
    env = {**os.environ, "FEDWARDEN_API_KEY": admin}
    cli("pki", "init", "--out", str(root / "pki"), "--host", "127.0.0.1")
    cli("pki", "node", "--institution", "Namur", "--out", str(root / "nodes"),
        "--database-url", url, env=env)  # fmt: skip
    doors = Coordinator(root, url, operator.strip().splitlines()[-1], free_port(), free_port())
    log = root / "coordinator.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            fedwarden(
                "coordinator", "start", "--pki", str(root / "pki"), "--state", str(root / "state"),
                "--database-url", url, "--port", str(doors.fleet_port),
                "--operator-port", str(doors.operator_port),
            ),
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while b"coordinator ready" not in log.read_bytes():
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield doors
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


OPERATOR_PATHS = ["/v1/control/list-runs", "/v1/control/start-run", "/v1/control/stop-run",
                  "/v1/runtime/create-task", "/v1/runtime/pull-task-input", "/docs",
                  "/openapi.json"]  # fmt: skip


def test_the_fleet_port_refuses_every_operator_api_and_audits_it(coordinator):
    fleet = f"https://127.0.0.1:{coordinator.fleet_port}"
    operator = f"https://127.0.0.1:{coordinator.operator_port}"

    with httpx.Client(verify=str(coordinator.ca), timeout=30) as http:
        refused = {path: http.post(fleet + path).status_code for path in OPERATOR_PATHS}
        on_operator_port = http.post(operator + "/v1/control/list-runs").status_code
        fleet_api = http.post(fleet + "/v1/fleet/get-run").status_code

    assert refused == dict.fromkeys(OPERATOR_PATHS, 403)
    assert on_operator_port != 403  # (Flower's own answer to a request with no body)
    assert fleet_api != 403  # the Fleet API is served: its own node authentication answers
    time.sleep(2)  # the coordinator reads the SuperLink's log line by line
    audited = {e.details["path"] for e in coordinator.audited("superlink.refused")}
    assert set(OPERATOR_PATHS) <= audited


def test_flwr_with_only_the_ca_can_neither_list_nor_start_runs(coordinator, tmp_path):
    outsider = tmp_path / "outsider"
    write_connection(
        state_dir=outsider, address=f"127.0.0.1:{coordinator.fleet_port}",
        ca_certificate=coordinator.ca,
    )  # fmt: skip
    app = tmp_path / "app"
    app.mkdir()
    marker = tmp_path / "owned"
    (app / "evil.py").write_text(
        "from pathlib import Path\nfrom flwr.serverapp import ServerApp\napp = ServerApp()\n"
        f"@app.main()\ndef main(grid, context):\n    Path({str(marker)!r}).write_text('x')\n"
    )
    (app / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
        '[project]\nname = "outsider"\nversion = "1.0.0"\ndependencies = []\n'
        '[tool.hatch.build.targets.wheel]\npackages = ["."]\n'
        '[tool.flwr.app]\npublisher = "outsider"\n'
        '[tool.flwr.app.components]\nserverapp = "evil:app"\nclientapp = "evil:app"\n'
        "[tool.flwr.app.config]\n"
    )
    env = {**os.environ, "FLWR_HOME": str(outsider / "flwr")}
    flwr = str(Path(sys.executable).with_name("flwr"))

    listing = subprocess.run([flwr, "ls", CONNECTION, "--format", "json"], capture_output=True,
                             text=True, env=env, timeout=120, check=False)  # fmt: skip
    started = subprocess.run([flwr, "run", str(app), CONNECTION, "--format", "json"],
                             capture_output=True, text=True, env=env, timeout=120, check=False,
                             cwd=tmp_path)  # fmt: skip
    time.sleep(2)

    assert '"success": true' not in listing.stdout.replace(" ", "").replace('":', '": ')
    assert '"run-id"' not in started.stdout, started.stdout
    assert not marker.exists()
    paths = {e.details["path"] for e in coordinator.audited("superlink.refused")}
    assert any(p.startswith("/v1/control/") for p in paths)
    as_operator = {**os.environ, "FEDWARDEN_API_KEY": coordinator.operator_key}
    where = ["--state", str(coordinator.root / "state"), "--database-url", coordinator.url]
    assert "outsider" not in cli("run", "list", *where, env=as_operator)
