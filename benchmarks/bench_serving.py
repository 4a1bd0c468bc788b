"""Inference costs, measured in one run on the same model.

1. In the process: onnxruntime vs PyTorch eager latency (p50, p99) of the served
   graph (preprocessing + network + softmax) at batch 1 and 256.
2. Over HTTP: requests per second of `fedwarden serve` (one uvicorn worker) under
   `wrk` on loopback at batch 1 and 64, and, from the service's own Prometheus
   histograms, how much of a batch-64 request is the model and how much the rest.

The model is the default heart-disease federation's (`fedwarden simulate --rounds 2`).

    python benchmarks/bench_serving.py [--seconds 10] [--connections 8]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pandas as pd
import torch

from client.models import ModelSpec
from client.preprocessing import PreprocessingSpec
from deploy.onnx_export import serving_module
from deploy.predictor import LoadedModel
from deploy.serving_model import encode_rows, frame_to_rows
from server.checkpoints import RunCheckpoint
from server.store import repository as repo
from server.store.engine import open_store
from server.store.governance import bootstrap_admin, enroll_principal
from simulations.scenario import Scenario


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(0.99 * (len(ordered) - 1))]


def in_process(
    model: LoadedModel, module: torch.nn.Module, rows: list[dict], *, batch: int, calls: int
) -> dict[str, tuple[float, float]]:
    torch.set_num_threads(1)
    numeric, categorical = encode_rows(rows[:batch], model.preprocessing)
    x_num, x_cat = torch.as_tensor(numeric), torch.as_tensor(categorical)
    feeds = {"numeric": numeric, "categorical": categorical}
    timings: dict[str, list[float]] = {"onnxruntime": [], "pytorch": []}
    for _ in range(calls):
        began = time.perf_counter()
        model.session.run(None, feeds)
        timings["onnxruntime"].append(time.perf_counter() - began)
        began = time.perf_counter()
        with torch.no_grad():
            module(x_num, x_cat)
        timings["pytorch"].append(time.perf_counter() - began)
    return {k: percentiles(v[calls // 10 :]) for k, v in timings.items()}


def wrk(url: str, body: str, key: str, *, seconds: int, connections: int) -> float:
    script = Path(tempfile.mkdtemp()) / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{errors.group(1)} failed requests under load:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def python_load(url: str, body: str, key: str, *, seconds: int, connections: int) -> float:
    """A fallback load generator when wrk is not installed (it costs more CPU itself)."""
    import threading

    done = []
    stop = time.monotonic() + seconds

    def worker() -> None:
        with httpx.Client(
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        ) as client:
            while time.monotonic() < stop:
                client.post(url, content=body).raise_for_status()
                done.append(1)

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(done) / seconds


def histogram(metrics: str, name: str, labels: str) -> tuple[float, float]:
    """Sum and count of a Prometheus histogram series (zeros before its first sample)."""
    values = []
    for part in ("sum", "count"):
        found = re.search(rf"{name}_{part}\{{{re.escape(labels)}\}} ([\d.e+-]+)", metrics)
        values.append(float(found.group(1)) if found else 0.0)
    return values[0], values[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fedwarden-bench-"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "simulations.cli",
            "simulate",
            "--rounds",
            "2",
            "--no-baseline",
            "--out",
            str(work),
        ],
        check=True,
        capture_output=True,
    )
    url = f"sqlite:///{work / 'fedwarden.db'}"
    store = open_store(url)
    with store.session() as session:
        bootstrap_admin(session=session)
        key = enroll_principal(session=session, name="bench", role="consumer", kind="service")[1]
        ops = repo.authenticate(
            session, enroll_principal(session=session, name="ops", role="operator")[1]
        )
        repo.promote_model_version(session=session, actor=ops, name="heart-disease", version=1)
        version = repo.get_model_version(session=session, actor=ops, name="heart-disease")
        checkpoint = RunCheckpoint.from_bytes(
            repo.checkpoint_for_export(session=session, actor=ops, run_id=version.run_id).blob
        )
        path, sha = Path(version.artifact_path), version.artifact_sha256
    store.dispose()
    spec = PreprocessingSpec.from_json(checkpoint.preprocessing)
    loaded = LoadedModel(
        name="heart-disease",
        version=1,
        path=path,
        sha256=sha,
        preprocessing=spec,
        providers=["CPUExecutionProvider"],
    )
    module = serving_module(checkpoint.weights, ModelSpec.from_dict(checkpoint.model_spec), spec)
    test = pd.concat([i.test for i in Scenario().all_institutions()], ignore_index=True)
    rows = frame_to_rows(pd.concat([test] * 2, ignore_index=True), spec)

    print("== in process: the served graph, onnxruntime vs PyTorch eager (1 thread)")
    for batch, calls in ((1, 3000), (256, 500)):
        result = in_process(loaded, module, rows, batch=batch, calls=calls)
        (o50, o99), (t50, t99) = result["onnxruntime"], result["pytorch"]
        print(
            f"batch {batch:>3}: onnxruntime p50 {o50 * 1e6:8.1f} µs p99 {o99 * 1e6:8.1f} µs | "
            f"pytorch p50 {t50 * 1e6:8.1f} µs p99 {t99 * 1e6:8.1f} µs | speed-up p50 {t50 / o50:5.2f}x"
        )

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulations.cli",
            "serve",
            "--database-url",
            url,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        load = wrk if shutil.which("wrk") else python_load
        print(
            f"== over HTTP: fedwarden serve (1 uvicorn worker), {load.__name__} with {args.connections} connections for {args.seconds} s"
        )
        for batch in (1, 64):
            body = json.dumps({"rows": rows[:batch]})
            before = httpx.get(f"{base}/metrics").text
            rps = load(
                f"{base}/v1/models/heart-disease/predict",
                body,
                key,
                seconds=args.seconds,
                connections=args.connections,
            )
            after = httpx.get(f"{base}/metrics").text
            label = 'route="/v1/models/{name}/predict"'
            (r0, n0), (r1, n1) = (
                histogram(m, "fedwarden_http_request_duration_seconds", label)
                for m in (before, after)
            )
            (m0, _), (m1, _) = (
                histogram(m, "fedwarden_model_inference_seconds", 'model="heart-disease"')
                for m in (before, after)
            )
            (c0, _), (c1, _) = (
                histogram(m, "fedwarden_input_check_seconds", 'model="heart-disease"')
                for m in (before, after)
            )
            requests = n1 - n0
            request, model, checks = (
                (r1 - r0) / requests,
                (m1 - m0) / requests,
                (c1 - c0) / requests,
            )
            print(
                f"batch {batch:>3}: {rps:8.1f} requests/s ({rps * batch:9.1f} rows/s); in the server: "
                f"{request * 1e3:6.2f} ms a request: model (onnxruntime) {model * 1e3:6.3f} ms, "
                f"row checks and encoding {checks * 1e3:6.3f} ms, "
                f"HTTP layer (JSON, auth, framework) {(request - model - checks) * 1e3:6.3f} ms"
            )
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
