"""Good clients' latency while the inference API is flooded with keyless and wrong-key requests.

A real `fedwarden serve` (one uvicorn worker, SQLite store) on a free loopback
port. Good clients (each with its own consumer key, used before the flood) call
`GET /v1/models` at a steady pace; their p50/p99 are measured once unloaded and
once while two other processes send 10,000 requests without a key and 10,000
with well-formed wrong keys, paced evenly over 30 s. Printed: both latency
pairs and their ratio, the flood's status codes, and how many audit rows the
flood caused (failures are audited as counts per interval, not one row each).
Where the flood's cost goes: the server's CPU time per flood request, beside
the CPU the flood's own senders burnt. On a deployment the senders are other
machines; here they share the server's cores, so they run at a lower CPU
priority (``--nice``, 10 by default; ``--nice 0`` to let them compete).

    python benchmarks/bench_auth_flood.py [--flood 10000] [--seconds 30] [--clients 4] [--nice 10]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from server.store import audit
from server.store.engine import open_store
from server.store.governance import bootstrap_admin, enroll_principal

ROUTE = "/v1/models"


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(0.99 * (len(ordered) - 1))]


def flood(
    base: str, kind: str, count: int, seconds: float, out: multiprocessing.Queue, *, nice: int
) -> None:
    """Send ``count`` requests without a key or with wrong keys, evenly over ``seconds``."""
    os.nice(nice)

    async def run() -> Counter[str]:
        statuses: Counter[str] = Counter()
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as client:
            gate = asyncio.Semaphore(64)
            began = time.perf_counter()

            async def one(index: int) -> None:
                delay = began + index * seconds / count - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                headers = {}
                if kind == "wrong-key":
                    headers["Authorization"] = f"Bearer fw_{secrets.token_hex(6)}_{'x' * 43}"
                async with gate:
                    try:
                        response = await client.get(ROUTE, headers=headers)
                        statuses[str(response.status_code)] += 1
                    except httpx.HTTPError as exc:
                        statuses[type(exc).__name__] += 1

            await asyncio.gather(*(one(i) for i in range(count)))
        statuses["elapsed_s"] = round(time.perf_counter() - began)
        statuses["cpu_ms"] = round(time.process_time() * 1e3)
        return statuses

    try:
        out.put((kind, dict(asyncio.run(run()))))
    except Exception as exc:  # reported by the parent
        out.put((kind, {"crashed": repr(exc), "elapsed_s": 0}))


def good_clients(base: str, keys: list[str], seconds: float, *, rate_per_s: float) -> list[float]:
    """Each key's client calls the API ``rate_per_s`` times a second; all latencies (s)."""
    latencies: list[float] = []
    lock = threading.Lock()

    def client(key: str) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            headers = {"Authorization": f"Bearer {key}"}
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                began = time.perf_counter()
                response = http.get(ROUTE, headers=headers)
                took = time.perf_counter() - began
                if response.status_code != 200:
                    raise RuntimeError(f"a good client got {response.status_code}: {response.text}")
                with lock:
                    latencies.append(took)
                time.sleep(max(0.0, 1 / rate_per_s - took))

    threads = [threading.Thread(target=client, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def audit_rows(url: str) -> int:
    store = open_store(url, upgrade=False)
    with store.session() as session:
        seq, _ = audit.head(session)
    store.dispose()
    return seq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood", type=int, default=10_000, help="requests of each kind")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rate", type=float, default=10.0, help="each good client's requests/s")
    parser.add_argument("--nice", type=int, default=10, help="CPU niceness of the flood senders")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fedwarden-flood-"))
    url = f"sqlite:///{work / 'fedwarden.db'}"
    store = open_store(url)
    with store.session() as session:
        bootstrap_admin(session=session)
        keys = [
            enroll_principal(session=session, name=f"good-{i}", role="consumer", kind="service")[1]
            for i in range(args.clients)
        ]
    store.dispose()

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "simulations.cli", "serve", "--database-url", url,
         "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        good_clients(base, keys, 1.0, rate_per_s=args.rate)  # each key verified once (warm-up)

        # as long as the flood: the two p99s are read from the same number of requests
        unloaded = good_clients(base, keys, args.seconds, rate_per_s=args.rate)
        before = audit_rows(url)
        server_cpu = cpu_seconds(server.pid)
        results: multiprocessing.Queue = multiprocessing.Queue()
        flooders = [
            multiprocessing.Process(
                target=flood,
                args=(base, kind, args.flood, args.seconds, results),
                kwargs={"nice": args.nice},
            )
            for kind in ("keyless", "wrong-key")
        ]
        for process in flooders:
            process.start()
        loaded = good_clients(base, keys, args.seconds, rate_per_s=args.rate)
        outcomes = dict(results.get(timeout=args.seconds * 4 + 120) for _ in flooders)
        for process in flooders:
            process.join()
        server_cpu = cpu_seconds(server.pid) - server_cpu
        time.sleep(6)  # one flush interval of the failure counts (5 s)
        written = audit_rows(url) - before
    finally:
        server.terminate()
        server.wait(timeout=30)

    (u50, u99), (l50, l99) = percentiles(unloaded), percentiles(loaded)
    print(
        f"== {args.clients} good clients at {args.rate:g} req/s each, GET {ROUTE}, 1 uvicorn worker"
    )
    print(f"unloaded: p50 {u50 * 1e3:7.2f} ms  p99 {u99 * 1e3:7.2f} ms  ({len(unloaded)} requests)")
    print(f"flooded:  p50 {l50 * 1e3:7.2f} ms  p99 {l99 * 1e3:7.2f} ms  ({len(loaded)} requests)")
    print(f"p99 flooded / unloaded: {l99 / u99:.2f}x (target <= 2x)")
    sender_cpu = 0.0
    for kind, statuses in outcomes.items():
        elapsed = statuses.pop("elapsed_s")
        sender_cpu += statuses.pop("cpu_ms", 0) / 1e3
        print(f"flood {kind}: {args.flood} requests in {elapsed} s -> {statuses}")
    served = 2 * args.flood + len(loaded)
    print(
        f"server CPU during the flood: {server_cpu:.1f} s ({server_cpu / served * 1e6:.0f} us per "
        f"request, good ones included); the flood's senders (nice {args.nice}): {sender_cpu:.1f} s"
    )
    print(f"audit rows written during the flood: {written}")


if __name__ == "__main__":
    main()
