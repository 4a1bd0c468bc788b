"""The coordinator's processes: the ServerApp executor's address, and a stop during start-up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from client.join import free_port
from server.engine.coordinator import serverappio_address
from server.engine.fast_serverapp import executor_argv
from server.engine.superlink import SuperLinkSettings

ROOT = Path(__file__).resolve().parents[3]


def test_the_serverapp_executor_reaches_the_superlink_on_the_loopback(tmp_path):
    def address(host: str) -> str:  # the operator address, never the Fleet one (port 9092 here)
        return serverappio_address(SuperLinkSettings(
            pki_dir=tmp_path, state_dir=tmp_path, host="0.0.0.0", port=9092,
            operator_host=host, operator_port=9093,
        ))  # fmt: skip

    argv = executor_argv(runtime_api_address="127.0.0.1:9093", ca_certificate=tmp_path / "ca.crt",
                         parent_pid=7, wake=tmp_path / "replies-wake.fifo")  # fmt: skip

    assert address("0.0.0.0") == "127.0.0.1:9093"
    assert address("::") == "[::1]:9093"
    assert address("coord.example.org") == "coord.example.org:9093"
    assert argv[1:4] == ["-m", "server.engine.fast_serverapp", "exec"]
    assert argv[argv.index("--root-certificates") + 1].endswith("ca.crt")
    assert argv[argv.index("--wake") + 1] == str(tmp_path / "replies-wake.fifo")


def _fedwarden(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "simulations.cli", *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=True,
    )  # fmt: skip
    return done.stdout.strip().splitlines()[-1]


def test_sigterm_during_start_up_leaves_nothing_running(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("FEDWARDEN_KEYRING", None)
    env["FEDWARDEN_API_KEY"] = _fedwarden("admin", "init", "--database-url", url, env=env)
    _fedwarden("pki", "init", "--out", str(tmp_path / "pki"), "--host", "127.0.0.1", env=env)
    coordinator = subprocess.Popen(
        [
            sys.executable, "-m", "simulations.cli", "coordinator", "start",
            "--pki", str(tmp_path / "pki"), "--state", str(tmp_path / "state"),
            "--database-url", url, "--port", str(free_port()),
        ],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    log = tmp_path / "state" / "superlink.log"
    deadline = time.monotonic() + 300
    while not log.exists() and time.monotonic() < deadline:  # the SuperLink is starting
        time.sleep(0.05)

    coordinator.send_signal(signal.SIGTERM)
    output, _ = coordinator.communicate(timeout=120)

    assert log.exists(), output
    assert "coordinator ready" not in output
    assert coordinator.returncode == 0, output
    left = subprocess.run(
        ["pgrep", "-f", str(tmp_path / "state")], capture_output=True, text=True, check=False
    ).stdout.split()
    try:
        assert left == []
    finally:
        for pid in left:
            os.kill(int(pid), signal.SIGKILL)
