"""A governance store holding a trained, registered heart-disease model, and services over it.

Built without Ray: a pooled model is trained in-process, recorded as a run's
checkpoint through the real ``StoreRecorder``, then exported and registered
through the real registry. Version 1 is in production, version 2 in staging.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient

from client.contract.architecture import ModelSpec
from client.contract.plan import TrainingPlan
from client.contract.preprocessing import PreprocessingSpec
from client.contract.profile import ReferenceProfile, encode_frame, federation_layout
from client.contract.report import FitReport
from client.models import build_model, get_weights, set_weights
from client.training import train_locally
from deploy.api import create_app
from deploy.registration import export_and_register
from deploy.settings import ServeSettings
from server.checkpoint_format import RunCheckpoint
from server.run_events import Institution, RoundRecord, RunResult, RunStart
from server.store import repository as repo
from server.store.engine import Store, open_store
from server.store.governance import bootstrap_admin, enroll_principal
from server.store.recorder import StoreRecorder
from server.store.settings import StoreSettings
from simulations.scenario import Scenario


@pytest.fixture(scope="session", autouse=True)
def artifact_cache(tmp_path_factory) -> Iterator[Path]:
    """Services in these tests (in-process and ``fedwarden serve``) cache artifacts here, not
    in the user's cache folder."""
    folder = tmp_path_factory.mktemp("artifact-cache")
    before = os.environ.get("FEDWARDEN_ARTIFACT_CACHE_DIR")
    os.environ["FEDWARDEN_ARTIFACT_CACHE_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("FEDWARDEN_ARTIFACT_CACHE_DIR", None)
    else:
        os.environ["FEDWARDEN_ARTIFACT_CACHE_DIR"] = before


@dataclass
class ModelStore:
    url: str
    store: Store
    keys: dict[str, str]
    spec: PreprocessingSpec
    test_rows: pd.DataFrame
    train_rows: pd.DataFrame
    weights: dict[int, list]
    model_spec: dict
    artifacts: Path


def _trained(spec: PreprocessingSpec, train: pd.DataFrame, *, seed: int, epochs: int) -> tuple[list, dict]:
    model_spec = TrainingPlan(model="logreg").model_spec(spec)
    network = build_model(model_spec, seed=seed)
    train_locally(network, spec.transform(train), spec.labels(train), epochs=epochs, learning_rate=0.05,
                  sample_rate=0.1, noise_multiplier=None, max_grad_norm=1.0, seed=seed,
                  device=torch.device("cpu"))
    return get_weights(network), model_spec.to_dict()


def _profile(spec: PreprocessingSpec, train: pd.DataFrame, model_spec: dict, weights: list,
             institutions: list[str]) -> ReferenceProfile:
    """The reference profile the federation would compute after round 2 (here from pooled rows)."""
    network = build_model(ModelSpec.from_dict(model_spec))
    set_weights(network, weights)
    with torch.no_grad():
        probabilities = torch.softmax(network(torch.as_tensor(spec.transform(train))), dim=1).numpy()
    layout = federation_layout(spec.schema)
    numeric, categorical = encode_frame(train, spec.schema)
    counts = layout.counts(numeric, categorical, probabilities, spec.labels(train))
    return ReferenceProfile(layout=layout, counts=counts,
                            rows=float(len(train)), round=2, institutions=tuple(sorted(institutions)))


@pytest.fixture(scope="module")
def model_store(tmp_path_factory) -> Iterator[ModelStore]:
    folder = tmp_path_factory.mktemp("registry")
    url = f"sqlite:///{folder / 'store.db'}"
    store = open_store(url)
    keys: dict[str, str] = {}
    with store.session() as session:
        keys["admin"] = bootstrap_admin(session=session)[1]
        for name, role in (("ops", "operator"), ("app", "consumer"), ("eve", "auditor")):
            keys[name] = enroll_principal(session=session, name=name, role=role)[1]
    data = Scenario().all_institutions()
    train = pd.concat([d.train for d in data], ignore_index=True)
    test = pd.concat([d.test for d in data], ignore_index=True)
    spec = PreprocessingSpec.fit(train, data[0].schema)
    weights = {}
    recorder = StoreRecorder(store, run_name="registry-fixture")
    recorder.on_run_start(RunStart(
        institutions=[Institution(node_id=i, name=d.name, num_train=len(d.train), num_test=len(d.test),
                                  budget_epsilon=1.0, budget_delta=1e-5, require_secagg=False)
                      for i, d in enumerate(data)],
        settings={"strategy": "fedavg"}, secure=True,
    ))
    for server_round, epochs in ((1, 2), (2, 60)):
        weights[server_round], model_spec = _trained(spec, train, seed=server_round, epochs=epochs)
        checkpoint = RunCheckpoint(round=server_round, weights=weights[server_round], preprocessing=spec.to_json(),
                                   model_spec=model_spec, run_config={"num-server-rounds": 2})
        recorder.on_round_end(RoundRecord(round=server_round, loss=0.5, accuracy=0.8, accuracy_by_institution={},
                                          epsilon={d.name: 0.5 * server_round for d in data},
                                          participants=[d.name for d in data], checkpoint=checkpoint,
                                          reports=[FitReport(institution=d.name, round=server_round,
                                                             num_examples=len(d.train), epsilon=0.5 * server_round,
                                                             epsilon_budget=1.0, delta=1e-5, noise_multiplier=4.0,
                                                             sample_rate=0.2, steps=5, max_grad_norm=1.0)
                                                   for d in data]))
    recorder.on_run_end(RunResult(weights=weights[2], model_spec=model_spec, preprocessing=spec.to_json(),
                                  rounds=[], stopped_reason="completed every round",
                                  profile=_profile(spec, train, model_spec, weights[2], [d.name for d in data])))
    with store.session() as session:
        ops = repo.authenticate(session, keys["ops"])
    artifacts = folder / "artifacts"
    for server_round in (1, 2):
        export_and_register(store=store, actor=ops, run_id=recorder.run_id, name="heart",
                            artifact_dir=artifacts, round=server_round, held_out=test)
    with store.session() as session:
        repo.promote_model_version(session=session, actor=repo.authenticate(session, keys["ops"]),
                                   name="heart", version=1)
    yield ModelStore(url=url, store=store, keys=keys, spec=spec, test_rows=test, train_rows=train, weights=weights,
                     model_spec=model_spec, artifacts=artifacts)
    store.dispose()


def settings_for(url: str, **changes: object) -> ServeSettings:
    fast = {"poll_interval_s": 0.2, "usage_flush_interval_s": 0.5}
    return ServeSettings(store=StoreSettings.load(url), **(fast | changes))  # type: ignore[arg-type]


@pytest.fixture
def client(model_store: ModelStore) -> Iterator[TestClient]:
    app = create_app(settings_for(model_store.url, max_rows=64, max_body_bytes=64 * 1024))
    with TestClient(app) as test_client:
        yield test_client


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LiveService:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def live_service(url: str, log: Path, *extra: str) -> Iterator[LiveService]:
    """``fedwarden serve`` as a real uvicorn process on 127.0.0.1, until it is ready."""
    port = free_port()
    env = {**os.environ, "FEDWARDEN_POLL_INTERVAL_S": "0.3"}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "simulations.cli", "serve", "--database-url", url,
             "--port", str(port), "--poll-interval", "0.3", "--log-level", "warning", *extra],
            stdout=sink, stderr=subprocess.STDOUT, env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"fedwarden serve exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"fedwarden serve never got ready: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield LiveService(url=base, process=process, log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def live(model_store: ModelStore, tmp_path_factory) -> Iterator[LiveService]:
    with live_service(model_store.url, tmp_path_factory.mktemp("serve") / "serve.log") as service:
        yield service


@pytest.fixture
def serve():  # type: ignore[no-untyped-def]
    """``live_service`` for tests that start a server on a store of their own."""
    return live_service
