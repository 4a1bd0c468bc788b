"""`fedwarden simulate --ray-address`: the simulation runs on an existing Ray cluster."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulations.runner import BackendSettings, _backend_config

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_address_connects_and_no_address_starts_a_fresh_local_instance() -> None:
    remote = _backend_config(BackendSettings(ray_address="10.0.0.5:6379"), 2)["init_args"]
    local = _backend_config(BackendSettings(), 2)["init_args"]

    assert remote["address"] == "10.0.0.5:6379"
    assert "num_cpus" not in remote and "num_gpus" not in remote  # ray.init refuses them
    assert local["address"] == "local"  # not whatever RAY_ADDRESS names
    assert local["num_cpus"] >= 1


@contextlib.contextmanager
def ray_head() -> Iterator[tuple[str, Path]]:
    """A Ray head of our own (its own temp dir), stopped by its process group.

    ``ray stop`` would also stop every other Ray instance of this user on the
    machine, so the head runs with ``--block`` and its process group is ended.
    """
    port = free_port()
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: socket paths
    head = subprocess.Popen(
        [
            str(BIN / "ray"), "start", "--head", "--block",
            "--node-ip-address", "127.0.0.1",
            "--port", str(port),
            "--num-cpus", "2",
            "--include-dashboard=false",
            "--temp-dir", str(temp_dir),
            "--disable-usage-stats",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )  # fmt: skip
    try:
        assert head.stdout is not None
        deadline = time.monotonic() + 120
        for line in head.stdout:
            if "Ray runtime started" in line or time.monotonic() > deadline:
                break
        yield f"127.0.0.1:{port}", temp_dir
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        time.sleep(1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # any worker left in the group
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_simulate_runs_on_the_cluster_given_by_ray_address(tmp_path: Path) -> None:
    with ray_head() as (address, temp_dir):
        with subprocess.Popen(
            [
                str(BIN / "fedwarden"), "simulate",
                "--dataset", "heart-disease", "--institutions", "2", "--rounds", "1",
                "--no-secagg", "--no-baseline", "--no-register",
                "--out", str(tmp_path / "run"),
                "--database-url", f"sqlite:///{tmp_path / 'store.db'}",
                "--ray-address", address,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        ) as simulate:  # fmt: skip
            output, _ = simulate.communicate(timeout=240)
        status = subprocess.run(
            [str(BIN / "ray"), "status", "--address", address],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        logs = temp_dir / "session_latest" / "logs"
        drivers = list(logs.glob(f"python-core-driver-*_{simulate.pid}.log"))
        workers = list(logs.glob("python-core-worker-*.log"))
        listing = sorted(p.name for p in logs.iterdir())

    assert simulate.returncode == 0, output[-3000:]
    assert drivers, f"no driver of pid {simulate.pid} in the cluster's logs: {listing}"
    assert workers  # the simulated institutions' actors ran on that cluster
    assert "Active:" in status.stdout and "1 node" in status.stdout, status.stdout
