"""Console page load times over a large SQLite store: 100 runs, 10,000 ledger rows,
100,000 audit events (defaults), served by a real uvicorn on a free port.

The store is seeded in bulk (the audit events as a valid hash chain, through
``audit.event_mac`` under the store's audit key); then each page is fetched ``--repeats`` times by a
signed-in operator or auditor and the median and worst times are printed. The
target is under 200 ms a page. Run::

    python benchmarks/bench_console.py [--runs 100] [--institutions 10] [--audit-events 100000]
"""

from __future__ import annotations

import argparse
import hashlib
import re
import socket
import statistics
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import func, insert, select

from server.console.app import create_app
from server.console.settings import ConsoleSettings
from server.store import audit
from server.store.audit_key import locator_for
from server.store.drift import record_drift_change
from server.store.engine import Store, open_store
from server.store.governance import bootstrap_admin, enroll_principal
from server.store.models import (
    AuditEvent,
    Checkpoint,
    Institution,
    LedgerEntry,
    ModelVersion,
    Round,
    Run,
)

ACTORS = ("ops", "eve", "coordinator", "inference-service", "admin")
ACTIONS = ("run.read", "round.record", "ledger.read", "model.read", "predict.usage", "authorize")


def seed(store: Store, *, runs: int, institutions: int, rounds: int, audit_events: int) -> dict[str, str]:
    """Principals with keys, then runs, rounds, ledger rows, models, drift and audit events."""
    keys: dict[str, str] = {}
    with store.session() as session:
        keys["admin"] = bootstrap_admin(session=session)[1]
        for name, role in (("ops", "operator"), ("eve", "auditor")):
            keys[name] = enroll_principal(session=session, name=name, role=role)[1]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with store.session() as session:
        session.execute(insert(Institution), [
            {"name": f"hospital-{i:02d}", "created_at": start} for i in range(institutions)
        ])
        ids = list(session.scalars(select(Institution.id).order_by(Institution.id)))
        run_rows, round_rows, ledger_rows, checkpoints, models = [], [], [], [], []
        for r in range(runs):
            run_id = str(uuid.UUID(int=r + 1))
            began = start + timedelta(hours=r)
            run_rows.append({
                "id": run_id, "name": f"run-{r:03d}", "status": "completed", "started_at": began,
                "ended_at": began + timedelta(minutes=30), "stopped_reason": "completed every round",
                "config": {"strategy": "fedavg", "secagg": True,
                           "plan": {"fw.dp": True, "fw.num-rounds": rounds, "fw.noise-multiplier": 1.1,
                                    "fw.max-grad-norm": 1.0}},
            })
            for k in range(1, rounds + 1):
                round_rows.append({
                    "run_id": run_id, "round": k, "loss": 0.7 - 0.02 * k, "accuracy": 0.6 + 0.02 * k,
                    "accuracy_by_institution": {}, "participants": [f"hospital-{i:02d}" for i in range(institutions)],
                    "refused": {}, "rejected": {}, "dropped": {}, "aggregated": True,
                    "secagg": {"num_shares": 3}, "central_epsilon": None, "duration_s": 2.0,
                    "recorded_at": began + timedelta(minutes=k),
                })
                for i in ids:
                    ledger_rows.append({
                        "run_id": run_id, "institution_id": i, "round": k, "steps": 20, "sample_rate": 0.2,
                        "noise_multiplier": 1.1, "max_grad_norm": 1.0, "epsilon": 0.05 * k, "delta": 1e-5,
                        "refused": False, "reason": "", "recorded_at": began + timedelta(minutes=k),
                        "kind": "train", "budget_epsilon": 50.0,
                    })
            checkpoints.append({"run_id": run_id, "round": rounds, "blob": b"\0" * 4096, "created_at": began})
            models.append({
                "name": f"model-{r % 10}", "version": r // 10 + 1, "stage": "staging",
                "artifact_path": "/dev/null", "artifact_sha256": hashlib.sha256(run_id.encode()).hexdigest(),
                "input_schema": {}, "output_labels": ["no", "yes"], "preprocessing": {}, "model_spec": {},
                "lineage": {"run_id": run_id, "round": rounds, "institutions": [], "epsilon": {}},
                "run_id": run_id, "created_at": began, "created_by": "ops", "profile": None,
            })
        session.execute(insert(Run), run_rows)
        session.execute(insert(Round), round_rows)
        for offset in range(0, len(ledger_rows), 5000):
            session.execute(insert(LedgerEntry), ledger_rows[offset : offset + 5000])
        session.execute(insert(Checkpoint), checkpoints)
        session.execute(insert(ModelVersion), models)
        for change in range(40):
            record_drift_change(
                session=session, model="model-0", version=1,
                previous=("ok", "warning")[change % 2], status=("warning", "ok")[change % 2],
                window_rows=500, window_span_s=3600.0,
                features=[{"name": f"f{j}", "detector": "psi", "score": 0.01 * (change % 7 + j),
                           "status": "ok", "bins": ["a", "b", "c"], "reference": [0.3, 0.4, 0.3],
                           "current": [0.3, 0.4, 0.3]} for j in range(12)],
            )
    _seed_audit(store, count=audit_events)
    return keys


def _seed_audit(store: Store, *, count: int) -> None:
    """Extend the chain by ``count`` events, MACed as ``audit.append`` does, in batches."""
    key = locator_for(store.engine).require_key()
    with store.session() as session:
        seq, prev = audit.head(session)
    time0 = datetime(2026, 2, 1, tzinfo=UTC)
    batch: list[dict[str, object]] = []
    for n in range(count):
        seq += 1
        fields = {
            "seq": seq, "time": time0 + timedelta(seconds=n), "actor": ACTORS[n % len(ACTORS)],
            "action": ACTIONS[n % len(ACTIONS)], "target": f"run:{n % 100}", "outcome": "success",
            "details": {"n": n}, "prev_hash": prev,
        }
        prev = audit.event_mac(fields, key)
        batch.append({**fields, "hash": prev})
        if len(batch) == 5000 or n == count - 1:
            with store.session() as session:
                session.execute(insert(AuditEvent), batch)
            batch = []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def signed_in(base: str, key: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=30)
    page = client.get("/signin").text
    token = re.search(r'name="signin_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    client.post("/signin", data={"api_key": key, "signin_token": token})
    return client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--institutions", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--audit-events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        store = open_store(url)
        began = time.perf_counter()
        keys = seed(store, runs=args.runs, institutions=args.institutions, rounds=args.rounds,
                    audit_events=args.audit_events)
        with store.session() as session:
            ledger = session.scalar(select(func.count()).select_from(LedgerEntry))
            events = audit.head(session)[0]
        print(f"seeded {args.runs} runs, {ledger} ledger rows, {events} audit events "
              f"in {time.perf_counter() - began:.1f} s ({url})")

        port = free_port()
        server = uvicorn.Server(uvicorn.Config(
            create_app(ConsoleSettings(database_url=url)), host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        try:
            ops, eve = signed_in(base, keys["ops"]), signed_in(base, keys["eve"])
            middle = str(uuid.UUID(int=args.runs // 2))
            pages = [
                (ops, "/"), (ops, "/runs"), (ops, "/runs?offset=50"), (ops, f"/runs/{middle}"),
                (ops, "/models"), (ops, "/models/model-3/5"), (ops, "/drift"), (ops, "/drift/model-0"),
                (eve, "/audit"), (eve, "/audit?actor=eve"), (eve, "/audit?action=authorize"),
                (eve, f"/audit?before={args.audit_events // 2}"), (eve, "/audit?since=2026-02-01T12:00&until=2026-02-01T13:00"),
            ]
            print(f"{'page':58s} {'median ms':>10s} {'worst ms':>9s}  status")
            worst_median = 0.0
            for client, path in pages:
                times, status = [], 0
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    response = client.get(path)
                    times.append((time.perf_counter() - t0) * 1000)
                    status = response.status_code
                median = statistics.median(times)
                worst_median = max(worst_median, median)
                print(f"{path:58s} {median:10.1f} {max(times):9.1f}  {status}")
            page = eve.get("/audit").text
            token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
            t0 = time.perf_counter()
            verified = eve.post("/audit/verify", data={"csrf_token": token}, headers={"X-Console-Fragment": "1"})
            print(f"verify the whole chain (an action, not a page): {(time.perf_counter() - t0) * 1000:.0f} ms, "
                  f"{'holds' if 'The chain holds' in verified.text else 'BROKEN'}")
            print(f"slowest page median: {worst_median:.1f} ms (target < 200 ms)")
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            store.dispose()


if __name__ == "__main__":
    main()
