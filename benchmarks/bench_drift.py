"""What drift monitoring adds to a prediction, measured in one run with it on and off.

The model is the default heart-disease federation's (`fedwarden simulate --rounds 2`),
registered with the run's reference profile and promoted. One service runs in
this process with monitoring switched on and off between calls; the predict
route's handler (auth check, row checks and encoding, onnxruntime, the JSON
body, and with monitoring the window's binning) is timed both ways in turn,
call after call, so that both see the same machine and the same model.

    python benchmarks/bench_drift.py [--batch 64] [--calls 3000] [--store DIR]

``--store`` reuses the output folder of an earlier ``fedwarden simulate`` (its
``fedwarden.db``, with no principals yet) instead of running one.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from deploy.routes import predict
from deploy.schemas import PredictRequest
from deploy.service import Service
from deploy.serving_model import frame_to_rows
from deploy.settings import ServeSettings
from server.store import repository as repo
from server.store.engine import open_store
from server.store.governance import bootstrap_admin, enroll_principal
from server.store.settings import StoreSettings
from simulations.scenario import Scenario

MODEL = "heart-disease"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[int(q * (len(ordered) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--store", type=Path, default=None)
    args = parser.parse_args()

    work = args.store or Path(tempfile.mkdtemp(prefix="fedwarden-bench-drift-"))
    if args.store is None:
        subprocess.run(
            [sys.executable, "-m", "simulations.cli", "simulate", "--rounds", "2",
             "--no-baseline", "--out", str(work)],
            check=True,
            capture_output=True,
        )  # fmt: skip
    url = f"sqlite:///{work / 'fedwarden.db'}"
    store = open_store(url)
    with store.session() as session:
        bootstrap_admin(session=session)
        key = enroll_principal(session=session, name="bench", role="consumer")[1]
        ops = repo.authenticate(
            session, enroll_principal(session=session, name="ops", role="operator")[1]
        )
        repo.promote_model_version(session=session, actor=ops, name=MODEL, version=1)
        has_profile = repo.get_model_version(session=session, actor=ops, name=MODEL).profile
    if not has_profile:
        raise SystemExit("the registered model has no reference profile")

    # One service (one onnxruntime session): monitoring is switched on and off between calls,
    # so that nothing but the monitor differs.
    settings = ServeSettings(store=StoreSettings.load(url), providers="cpu", drift_window_rows=5000)
    service = Service.build(settings, store=store)
    service.catalog.refresh()  # no background threads: nothing else runs during timing
    identity = service.authenticator.identify(f"Bearer {key}")
    model = service.holder.get(MODEL)
    assert model is not None
    test = pd.concat([i.test for i in Scenario().all_institutions()], ignore_index=True)
    rows = frame_to_rows(test, model.preprocessing)[: args.batch]
    request = PredictRequest(rows=rows)

    loop = asyncio.new_event_loop()
    timings: dict[bool, list[float]] = {True: [], False: []}
    for call in range(args.calls + args.calls // 10):
        # On and off alternate, in alternating order, so both see the same machine.
        for monitoring in (True, False) if call % 2 else (False, True):
            service.drift.enabled = monitoring
            began = time.perf_counter()
            loop.run_until_complete(predict(MODEL, identity, service, request))
            if call >= args.calls // 10:  # the first tenth warms up
                timings[monitoring].append(time.perf_counter() - began)
    paired = [a - b for a, b in zip(timings[True], timings[False], strict=True)]
    loop.close()

    monitor = service.drift.monitor(model)
    assert monitor is not None
    numeric, categorical = model.encode(rows)
    probabilities = model.run(numeric, categorical).probabilities
    record = []
    for _ in range(args.calls):
        began = time.perf_counter()
        monitor.record(numeric, categorical, probabilities)
        record.append(time.perf_counter() - began)
    evaluate = []
    for _ in range(50):
        began = time.perf_counter()
        monitor.evaluate()
        evaluate.append(time.perf_counter() - began)

    print(f"== predict handler, batch {args.batch}, {args.calls} calls each, in one run (1 thread)")
    for monitoring in (False, True):
        samples = timings[monitoring]
        print(
            f"monitoring {'on ' if monitoring else 'off'}: p50 {percentile(samples, 0.5) * 1e6:8.1f} µs "
            f"p95 {percentile(samples, 0.95) * 1e6:8.1f} µs mean {statistics.fmean(samples) * 1e6:8.1f} µs"
        )
    on, off = timings[True], timings[False]
    print(
        f"ratio on/off: p50 {percentile(on, 0.5) / percentile(off, 0.5):.3f} "
        f"p95 {percentile(on, 0.95) / percentile(off, 0.95):.3f} "
        f"mean {statistics.fmean(on) / statistics.fmean(off):.3f}; "
        f"median of paired differences {statistics.median(paired) * 1e6:+.1f} µs "
        f"({statistics.median(paired) / percentile(off, 0.5):+.1%} of p50 off)"
    )
    print(
        f"the monitor's share per batch of {args.batch}: p50 {percentile(record, 0.5) * 1e6:.1f} µs, "
        f"mean {statistics.fmean(record) * 1e6:.1f} µs (binning {monitor.flush_rows} rows at a "
        f"time, p99 {percentile(record, 0.99) * 1e6:.1f} µs); scoring a window of "
        f"{monitor.window.capacity} rows (off the predict path) p50 "
        f"{percentile(evaluate, 0.5) * 1e3:.2f} ms"
    )
    store.dispose()


if __name__ == "__main__":
    main()
