"""Inference costs, measured in one run on the same model.

1. In the process, batch 64: what a predict request costs outside the model
   (parsing the body, checking and encoding it, building the answer, keeping
   the prediction ids) against the model itself (onnxruntime), for the row and
   the columnar formats, beside the path before columnar requests existed
   (stdlib JSON, pydantic, the row encoder, stdlib JSON out).
2. Over HTTP: requests and rows per second of `fedwarden serve` (one uvicorn
   worker) at batch 1, 64 and 1024, rows and columns.
3. FP32 vs INT8 (ONNX Runtime dynamic and static quantisation): latency at
   batch 1 and 64 on one thread, and held-out accuracy, for the heart-disease
   model and for a larger MLP (two hidden layers of 1024) trained on the same rows.

The heart-disease model is the default federation's (`fedwarden simulate --rounds 2`).

    python benchmarks/bench_serving.py [--seconds 5] [--connections 4]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
import torch

from client.contract.architecture import ModelSpec
from client.contract.preprocessing import PreprocessingSpec
from client.models import build_model, get_weights
from client.training import train_locally
from deploy.onnx_export import export_model
from deploy.outcomes import OutcomeLog
from deploy.predictor import LoadedModel
from deploy.quantize import quantize_artifact
from deploy.requests import parse_predict_body
from deploy.schemas import PredictRequest
from deploy.serving_model import encode_rows, frame_to_rows
from deploy.validation import RequestLimits
from server.checkpoint_format import RunCheckpoint
from server.store import repository as repo
from server.store.engine import open_store
from server.store.governance import bootstrap_admin, enroll_principal
from simulations.scenario import Scenario


def median_us(work: Callable[[], Any], *, calls: int) -> float:
    samples = []
    for _ in range(calls):
        began = time.perf_counter()
        work()
        samples.append(time.perf_counter() - began)
    return 1e6 * statistics.median(samples[calls // 10 :])


def answer(model: LoadedModel, probabilities: np.ndarray, ids: list[str]) -> dict[str, Any]:
    """The predict route's answer as a dict, as the route built it before ``AnswerWriter``."""
    labels = model.labels
    predicted = [labels[i] for i in probabilities.argmax(axis=1)]
    return {
        "model": model.name,
        "version": model.version,
        "predictions": [
            {"label": label, "probabilities": dict(zip(labels, row, strict=True)),
             "prediction_id": i, "request_id": None}
            for label, row, i in zip(predicted, probabilities.tolist(), ids, strict=True)
        ],
    }  # fmt: skip


def in_process(model: LoadedModel, rows: list[dict], store_url: str, *, calls: int) -> None:
    batch = rows[:64]
    columns = {
        name: [row.get(name) for row in batch] for name in model.preprocessing.schema.feature_names
    }
    row_body, column_body = orjson.dumps({"rows": batch}), orjson.dumps({"columns": columns})
    limits = RequestLimits()
    store = open_store(store_url)
    outcomes = OutcomeLog(store, retention_s=86400.0)
    numeric, categorical = model.encode(batch)
    prediction = model.run(numeric, categorical)
    probabilities, labels = prediction.probabilities, prediction.labels

    def before() -> None:  # the predict path before this change: stdlib JSON and pydantic
        request = PredictRequest.model_validate(json.loads(row_body))
        encoded = model.encode(request.rows or [], limits=limits)
        json.dumps(answer(model, probabilities, [""] * len(encoded[0])))

    def by(fmt: str) -> Callable[[], None]:
        raw = row_body if fmt == "rows" else column_body

        def outside() -> None:
            body = parse_predict_body(raw)
            if body.columns is not None:
                encoded = model.encode_columns(body.columns, limits=limits)
            else:
                encoded = model.encode(body.rows or [], limits=limits)
            ids, requests = outcomes.record(
                model=model.name, version=1, probabilities=probabilities, request_id=None
            )
            model.answers.write(  # as the predict route writes it
                model=model.name,
                version=model.version,
                labels=labels,
                probabilities=probabilities,
                prediction_ids=ids,
                request_ids=requests,
            )
            del encoded

        return outside

    model_us = median_us(lambda: model.run(numeric, categorical), calls=calls)
    print("== in process, batch 64 (1 onnxruntime thread): outside the model vs the model")
    print(f"model (onnxruntime session.run):                 {model_us:8.1f} µs")
    for label, work in (("before: stdlib JSON + pydantic + row checks", before),
                        ("rows: orjson + row checks + answer + ids", by("rows")),
                        ("columns: orjson + numpy checks + answer + ids", by("columns"))):  # fmt: skip
        outside = median_us(work, calls=calls)
        print(
            f"{label:<48} {outside:8.1f} µs outside the model ({outside / model_us:4.2f}x the model)"
        )
        outcomes._pending.clear()
    store.dispose()


def load(url: str, body: bytes, key: str, *, seconds: float, connections: int) -> float:
    """Requests per second from ``connections`` keep-alive clients (in this process)."""
    done = []
    stop = time.monotonic() + seconds

    def worker() -> None:
        count = 0
        with httpx.Client(
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        ) as client:
            while time.monotonic() < stop:
                client.post(url, content=body).raise_for_status()
                count += 1
        done.append(count)

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.monotonic() - began)


def over_http(
    url: str, key: str, rows: list[dict], features: list[str], *, seconds: float, connections: int
) -> None:
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
            "--max-rows",
            "1024",
            "--max-body-bytes",
            str(8 << 20),
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
                pass
            time.sleep(0.2)
        print(
            f"== over HTTP: fedwarden serve (1 uvicorn worker), {connections} Python clients, {seconds:g} s each"
        )
        for batch in (1, 64, 1024):
            part = (rows * (1 + batch // len(rows)))[:batch]
            bodies = {
                "rows": orjson.dumps({"rows": part}),
                "columns": orjson.dumps(
                    {"columns": {f: [r.get(f) for r in part] for f in features}}
                ),
            }
            for fmt, body in bodies.items():
                rps = load(
                    f"{base}/v1/models/heart-disease/predict",
                    body,
                    key,
                    seconds=seconds,
                    connections=connections,
                )
                print(
                    f"batch {batch:>4} {fmt:<7}: {rps:8.1f} requests/s {rps * batch:10.1f} rows/s"
                )
    finally:
        server.terminate()
        server.wait(timeout=10)


def int8(label: str, path: Path, spec: PreprocessingSpec, test: pd.DataFrame) -> None:
    numeric, categorical = encode_rows(frame_to_rows(test, spec), spec)
    labels = spec.labels(test)
    for mode in ("dynamic", "static"):
        decision = quantize_artifact(
            path,
            mode=mode,
            numeric=numeric,
            categorical=categorical,
            labels=labels,
            tolerance_points=100.0,
            repeats=300,
        )
        for measured in ([decision.fp32] if mode == "dynamic" else []) + list(decision.candidates):
            print(
                f"{label:<26} {measured.kind:<8} batch 1 {measured.ms_batch_1 * 1e3:8.1f} µs  "
                f"batch 64 {measured.ms_batch_64 * 1e3:8.1f} µs  accuracy {measured.accuracy:.4f}  "
                f"speed-up b1 {decision.fp32.ms_batch_1 / measured.ms_batch_1:4.2f}x "
                f"b64 {decision.fp32.ms_batch_64 / measured.ms_batch_64:4.2f}x"
            )
        for measured in decision.candidates:
            path.with_name(f"{path.stem}.int8-{measured.kind}.onnx").unlink(missing_ok=True)


def larger_mlp(spec: PreprocessingSpec, train: pd.DataFrame, folder: Path) -> Path:
    model_spec = ModelSpec(
        name="mlp",
        num_features=len(spec.output_names),
        num_classes=len(spec.schema.target.labels),
        hidden=1024,
    )
    network = build_model(model_spec, seed=0)
    train_locally(
        network,
        spec.transform(train),
        spec.labels(train),
        epochs=15,
        learning_rate=0.02,
        sample_rate=0.1,
        noise_multiplier=None,
        max_grad_norm=1.0,
        seed=0,
        device=torch.device("cpu"),
    )
    exported = export_model(
        weights=get_weights(network),
        model_spec=model_spec,
        preprocessing=spec,
        path=folder / "mlp-1024.onnx",
    )
    return exported.path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)

    work = Path(tempfile.mkdtemp(prefix="fedwarden-bench-"))
    try:
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
        model = LoadedModel(
            name="heart-disease",
            version=1,
            path=path,
            sha256=sha,
            preprocessing=spec,
            providers=["CPUExecutionProvider"],
        )
        institutions = Scenario().all_institutions()
        test = pd.concat([i.test for i in institutions], ignore_index=True)
        train = pd.concat([i.train for i in institutions], ignore_index=True)
        rows = frame_to_rows(test, spec)

        in_process(model, rows, url, calls=args.calls)
        over_http(
            url,
            key,
            rows,
            spec.schema.feature_names,
            seconds=args.seconds,
            connections=args.connections,
        )
        print("== FP32 vs INT8 (onnxruntime.quantization), 1 thread, accuracy on the held-out rows")
        int8("heart-disease (federated)", path, spec, test)
        int8("MLP 1024-1024 (pooled)", larger_mlp(spec, train, work), spec, test)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
