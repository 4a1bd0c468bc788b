"""A fedwarden deployment on 127.0.0.1, as an operator starts it (``bench_deployment.py``'s
``fedwarden`` mode): admin and PKI set up, ``coordinator start`` (TLS, node authentication),
three ``client join --warm`` and ``run start``; seconds per round from the store."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
INSTITUTIONS = ("Cleveland", "Hungary", "Switzerland", "VA Long Beach")


def _fedwarden(*args: str) -> list[str]:
    return [sys.executable, "-m", "simulations.cli", *args]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _last_line(argv: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=PROJECT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[2:5])} failed: {done.stdout}{done.stderr}")
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def _toml(config: dict[str, Any]) -> str:
    def text(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return f'"{value}"' if isinstance(value, str) else repr(value)

    return "".join(f"{key} = {text(value)}\n" for key, value in config.items())


def fedwarden_seconds_per_round(
    run_config: dict[str, Any], *, institutions: int, budget_epsilon: float, timeout_s: float
) -> tuple[float, float, list[str]]:
    """Median ``duration_s`` of rounds 2..N, the run's wall time, and where the time went."""
    from sqlalchemy import select

    from server.store.engine import open_store
    from server.store.models import Round

    root = Path(tempfile.mkdtemp(prefix="fedwarden-bench-fedwarden-"))
    url = f"sqlite:///{root / 'store.db'}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FLWR_TELEMETRY_ENABLED": "0"}
    env.pop("FEDWARDEN_KEYRING", None)
    token = _last_line(_fedwarden("admin", "init", "--database-url", url), env)
    operator = _last_line(_fedwarden("admin", "enroll", "ops", "operator", "--database-url", url), env)
    admin_env = {**env, "FEDWARDEN_API_KEY": token}
    _last_line(_fedwarden("pki", "init", "--out", str(root / "pki"), "--host", "127.0.0.1"), admin_env)
    names = INSTITUTIONS[:institutions]
    for name in names:
        _last_line(
            _fedwarden(
                "pki", "node", "--institution", name, "--out", str(root / "nodes"),
                "--database-url", url,
            ),
            admin_env,
        )  # fmt: skip
    port = _free_port()
    processes: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, argv: list[str], extra: dict[str, str]) -> subprocess.Popen[bytes]:
        with (root / f"{name}.log").open("ab") as out:
            process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env={**env, **extra}, cwd=PROJECT,
                start_new_session=True,
            )  # fmt: skip
        processes.append(process)
        return process

    def wait_for_text(name: str, text: str, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while text not in (root / f"{name}.log").read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {text!r} in {root / name}.log after {limit_s:g} s")
            time.sleep(0.2)

    timings: dict[str, float] = {}
    began = time.monotonic()
    try:
        spawn(
            "coordinator",
            _fedwarden(
                "coordinator", "start", "--pki", str(root / "pki"), "--state", str(root / "state"),
                "--database-url", url, "--port", str(port), "--operator-port", str(_free_port()),
            ),
            {"FEDWARDEN_API_KEY": token},
        )  # fmt: skip
        wait_for_text("coordinator", "coordinator ready", 120)
        timings["coordinator ready"] = time.monotonic() - began
        for index, name in enumerate(names):
            spawn(
                f"node{index}",
                _fedwarden(
                    "client", "join", "--coordinator", f"127.0.0.1:{port}",
                    "--ca", str(root / "pki" / "ca.crt"), "--key", str(root / "nodes" / f"{name}.key"),
                    "--dataset", "heart-disease", "--partition-id", str(index),
                    "--budget-epsilon", str(budget_epsilon), "--state", str(root / f"node{index}"),
                    "--no-check-data", "--warm",
                ),
                {},
            )  # fmt: skip
        config = root / "run.toml"
        config.write_text(_toml(run_config))
        started = time.monotonic()
        run = spawn(
            "run",
            _fedwarden(
                "run", "start", "--config", str(config), "--stream", "--state", str(root / "state"),
                "--database-url", url,
            ),
            {"FEDWARDEN_API_KEY": operator},
        )  # fmt: skip
        code = run.wait(timeout=timeout_s)
        wall = time.monotonic() - started
        if code != 0:
            raise RuntimeError(f"run start exited {code}; logs in {root}")
    finally:
        for process in reversed(processes):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    store = open_store(url, upgrade=False)
    try:
        with store.session() as session:
            rounds = sorted(session.scalars(select(Round)), key=lambda r: r.round)
            durations = [r.duration_s for r in rounds]
    finally:
        store.dispose()
    if len(durations) != int(run_config["num-server-rounds"]):
        raise RuntimeError(f"{len(durations)} rounds recorded; logs in {root}")
    per_round = statistics.median(durations[1:] or durations)
    breakdown = [
        f"set-up (PKI, store, coordinator ready): {timings['coordinator ready']:.1f} s",
        f"run start to end: {wall:.1f} s, of which rounds {sum(durations):.1f} s "
        f"(each: {', '.join(f'{d:.2f}' for d in durations)}) and the ServerApp's start, "
        f"FAB install and census {wall - sum(durations):.1f} s",
        f"logs: {root}",
    ]
    return per_round, wall, breakdown
