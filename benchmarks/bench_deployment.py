"""What a round costs over Flower's deployment engine, against the simulation, in one run.

Three heart-disease institutions (Cleveland, Hungary, Switzerland), SecAgg+ and
DP-SGD on, N rounds. One local SuperLink and three SuperNodes per setting:

- ``subprocess``: SuperNodes in Flower's default isolation, a fresh
  ``flwr-clientapp`` process per message;
- ``superexec``: ``--isolation process`` with Flower's ``flower-superexec``
  beside each SuperNode (still a fresh process per message);
- ``warm``: ``--isolation process`` with ``python -m client.warm_exec``, which
  forks one preloaded process per message;
- ``warm-poll``: ``warm`` with the executors polling every 0.05 s
  (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``, Flower's only supported knob on this
  path; the SuperNode's and the ServerApp's 3 s polls are fixed in Flower 1.41);
- ``fedwarden`` (the default, with ``simulation``): the deployment as an operator
  runs it, through fedwarden's own commands: ``coordinator start`` (a SuperLink
  with TLS, node authentication and a state database, its ServerApps started by
  ``server.engine.fast_serverapp``: back-off polls), three ``client join --warm``
  (SuperNodes through ``client.fast_poll``, preloaded forked ClientApps) and
  ``run start``;
- ``simulation``: the same run on Flower's simulation engine (Ray, in-process).

For ``fedwarden`` and ``simulation`` seconds per round are the median of the
rounds' ``duration_s`` that the federation itself records (the store's ``rounds``
table; the simulation's result), rounds 2..N: the same clock on both engines.
For the other modes, seconds per round are the median gap between the ServerApp's successive
"Secure aggregation completed" log lines of the training rounds (streamed by
``flwr run --stream``, every 0.5 s), i.e. rounds 2..N with their evaluation, so the
ServerApp's start-up and the FAB upload are left out; for the simulation, the
median duration of rounds 2..N (round 1 also starts Ray).
Those modes use plain connections (``--insecure``); ``fedwarden`` uses TLS and node keys.

    python benchmarks/bench_deployment.py [--rounds 3] [--modes fedwarden simulation warm ...]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODES = ("fedwarden", "simulation", "subprocess", "superexec", "warm", "warm-poll")
DEFAULT_MODES = ("fedwarden", "simulation")
BUDGET_EPSILON = 50.0  # every institution's, on both engines: no round is refused
NOISE_MULTIPLIER = 1.0
FAST_POLL_S = "0.05"  # FLWR_SUPEREXEC_TASK_POLL_INTERVAL of warm-poll (Flower's default: 1 s)
# Flower's SecAggPlusWorkflow logs this once per secure sum: the federated summary
# that fits the preprocessing, then once per training round.
ROUND_LINE = re.compile(r"Secure aggregation completed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalFederation:
    """A SuperLink, its SuperNodes and (``--isolation process``) their executors."""

    root: Path
    mode: str
    institutions: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    control_address: str = ""

    def env(self, home: Path) -> dict[str, str]:
        home.mkdir(parents=True, exist_ok=True)
        return {
            **os.environ,
            "FLWR_HOME": str(home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "PYTHONUNBUFFERED": "1",
        }

    def spawn(
        self, name: str, args: Sequence[str], home: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        log = (self.root / f"{name}.log").open("wb")
        self.processes.append(
            subprocess.Popen(
                list(args),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**self.env(home), **(extra_env or {})},
                cwd=self.root,
                start_new_session=True,  # its own process group: stopped as one
            )
        )

    def start(self) -> None:
        # One HTTP port serves the SuperLink's Fleet, Control and Runtime APIs.
        link = free_port()
        self.control_address = f"127.0.0.1:{link}"
        self.spawn(
            "superlink",
            [
                str(BIN / "flower-superlink"),
                "--insecure",
                "--disable-runtime-dependency-installation",
                "--database",
                str(self.root / "superlink.db"),
                "--host",
                "127.0.0.1",
                "--port",
                str(link),
            ],
            self.root / "home-superlink",
        )
        isolation = "subprocess" if self.mode == "subprocess" else "process"
        for index in range(self.institutions):
            port = free_port()
            home = self.root / f"home-node{index}"
            self.spawn(
                f"supernode{index}",
                [
                    str(BIN / "flower-supernode"),
                    "--insecure",
                    "--superlink",
                    self.control_address,
                    "--isolation",
                    isolation,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--node-config",
                    f'dataset="heart-disease" partition-id={index}',
                ],
                home,
            )
            address = f"127.0.0.1:{port}"
            if self.mode == "superexec":
                exec_args = [str(BIN / "flower-superexec"), "--runtime-api-address", address]
            elif self.mode in ("warm", "warm-poll"):
                exec_args = [
                    sys.executable,
                    "-m",
                    "client.warm_exec",
                    "--appio-api-address",
                    address,
                ]
            else:
                continue
            poll = (
                {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": FAST_POLL_S}
                if self.mode == "warm-poll"
                else {}
            )
            self.spawn(f"exec{index}", [*exec_args, "--insecure"], home, poll)
        home = self.root / "home-cli"
        home.mkdir(exist_ok=True)
        (home / "config.toml").write_text(
            textwrap.dedent(
                f"""\
                [superlink]
                default = "local"

                [superlink.local]
                address = "{self.control_address}"
                insecure = true
                """
            )
        )

    def run(self, run_config: str, *, timeout_s: float) -> list[float]:
        """``flwr run`` the project; when each streamed secure-sum line arrived."""
        command = [
            str(BIN / "flwr"),
            "run",
            str(PROJECT),
            "local",
            "--run-config",
            run_config,
            "--stream",
        ]
        deadline = time.monotonic() + timeout_s
        while True:  # the SuperLink's Control API takes a moment to come up
            probe = subprocess.run(
                [str(BIN / "flwr"), "ls", "local"],
                env=self.env(self.root / "home-cli"),
                capture_output=True,
                check=False,
                timeout=60,
            )
            if probe.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        rounds: list[float] = []
        transcript = (self.root / "flwr-run.log").open("w")
        with subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env(self.root / "home-cli"),
            cwd=self.root,
            text=True,
            start_new_session=True,
        ) as process:
            self.processes.append(process)  # type: ignore[arg-type]
            assert process.stdout is not None
            for line in process.stdout:
                transcript.write(line)
                if ROUND_LINE.search(line):
                    rounds.append(time.monotonic())
                if time.monotonic() > deadline:
                    break
            code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        transcript.close()
        status = self.run_status()
        if code != 0 or "completed" not in status:
            raise RuntimeError(
                f"flwr run exited with {code}, run status {status!r}; see {self.root}/flwr-run.log"
            )
        return rounds

    def run_status(self) -> str:
        """The status of the SuperLink's latest run, as ``flwr ls`` reports it."""
        listing = subprocess.run(
            [str(BIN / "flwr"), "ls", "local", "--format", "json"],
            env=self.env(self.root / "home-cli"),
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        try:
            runs = json.loads(listing.stdout)["runs"]
        except (ValueError, KeyError):
            return f"unknown ({listing.stdout.strip()[:200]})"
        latest: dict[str, Any] = max(
            runs, key=lambda run: str(run.get("pending-at", "")), default={}
        )
        return f"{latest.get('status', 'unknown')} {latest.get('status-details', '')}".strip()

    def stop(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextlib.contextmanager
def local_federation(mode: str, *, institutions: int, root: Path) -> Iterator[LocalFederation]:
    federation = LocalFederation(root=root, mode=mode, institutions=institutions)
    try:
        federation.start()
        yield federation
    finally:
        federation.stop()


def deployment_seconds_per_round(
    mode: str, *, institutions: int, rounds: int, timeout_s: float
) -> tuple[float, float]:
    """Median seconds between successive round lines (so rounds 2..N), and the run's wall time."""
    root = Path(tempfile.mkdtemp(prefix=f"fedwarden-bench-{mode}-"))
    run_config = (
        f"num-server-rounds={rounds} secagg=true dp=true min-institutions={institutions} "
        f"wait-timeout=120.0 profile=false noise-multiplier={NOISE_MULTIPLIER}"
    )
    with local_federation(mode, institutions=institutions, root=root) as federation:
        began = time.monotonic()
        lines = federation.run(run_config, timeout_s=timeout_s)
        wall = time.monotonic() - began
    if len(lines) < rounds + 1:
        raise RuntimeError(f"{mode}: saw {len(lines)} of {rounds + 1} secure sums; logs in {root}")
    times = lines[-rounds:]  # the training rounds, after the summary
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return (statistics.median(gaps) if gaps else wall), wall


def run_config(*, institutions: int, rounds: int) -> dict[str, Any]:
    """The run both engines do."""
    return {
        "num-server-rounds": rounds,
        "secagg": True,
        "dp": True,
        "noise-multiplier": NOISE_MULTIPLIER,
        "min-institutions": institutions,
        "profile": False,
        "wait-timeout": 120.0,
    }


def simulation_seconds_per_round(*, institutions: int, rounds: int) -> float:
    """Median round duration of the same run on Flower's simulation engine."""
    from privacy.config import PrivacyBudget
    from simulations.runner import prepare, simulate
    from simulations.scenario import Scenario

    scenario = Scenario(
        dataset="heart-disease",
        institutions=institutions,
        budget=PrivacyBudget(epsilon=BUDGET_EPSILON, delta=1e-5),
    )
    config = run_config(institutions=institutions, rounds=rounds)
    config.pop("wait-timeout")
    outcome = simulate(scenario, prepare(scenario, config), baseline=False)
    durations = [r.duration_s for r in outcome.result.rounds]
    return statistics.median(durations[1:] or durations)  # round 1 also starts Ray


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--institutions", type=int, default=3)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(DEFAULT_MODES))
    parser.add_argument("--timeout", type=float, default=900.0, help="Seconds per deployment run.")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    results: dict[str, float] = {}
    for mode in args.modes:
        if mode == "simulation":
            results[mode] = simulation_seconds_per_round(
                institutions=args.institutions, rounds=args.rounds
            )
            print(f"{mode:>10}: {results[mode]:6.2f} s/round", flush=True)
            continue
        if mode == "fedwarden":
            from fedwarden_deployment import fedwarden_seconds_per_round

            per_round, wall, breakdown = fedwarden_seconds_per_round(
                run_config(institutions=args.institutions, rounds=args.rounds),
                institutions=args.institutions,
                budget_epsilon=BUDGET_EPSILON,
                timeout_s=args.timeout,
            )
            results[mode] = per_round
            print(f"{mode:>10}: {per_round:6.2f} s/round  ({wall:.0f} s for the whole run)")
            for line in breakdown:
                print(f"{'':>12}{line}", flush=True)
            continue
        per_round, wall = deployment_seconds_per_round(
            mode, institutions=args.institutions, rounds=args.rounds, timeout_s=args.timeout
        )
        results[mode] = per_round
        print(f"{mode:>10}: {per_round:6.2f} s/round  ({wall:.0f} s for the whole run)", flush=True)
    print(
        f"\n{args.institutions} heart-disease institutions, SecAgg+ and DP-SGD, {args.rounds} rounds"
    )
    print("setting      s/round  × simulation")
    reference = results.get("simulation")
    for mode, seconds in results.items():
        ratio = f"{seconds / reference:8.1f}x" if reference else "       -"
        print(f"{mode:<10} {seconds:9.2f}  {ratio}")


if __name__ == "__main__":
    main()
