"""A store holding a finished small run, and the console over it: in-process and live.

The run is written through the real ``StoreRecorder`` (three institutions, three
rounds, a refusal and a dropout, DP ledger entries with budgets, checkpoints),
two model versions are registered from it through the real registry (v1 in
production), node keys are registered, and the inference service's drift
bookkeeping has recorded one status change. Nothing is mocked.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from client.contract.report import FitReport
from privacy.pki import generate_node_key
from server.checkpoint_format import RunCheckpoint
from server.console.app import create_app
from server.console.settings import ConsoleSettings
from server.run_events import Institution, RoundRecord, RunResult, RunStart
from server.store.drift import record_drift_change
from server.store.engine import Store, open_store
from server.store.governance import bootstrap_admin, enroll_principal
from server.store.keys import authenticate
from server.store.nodes import register_node_key, revoke_node_key
from server.store.recorder import StoreRecorder
from server.store.registry import promote_model_version, register_model_version

INSTITUTIONS = ("Cleveland", "Hungary", "Switzerland")
BUDGET = 2.0


@dataclass
class Seeded:
    url: str
    store: Store
    keys: dict[str, str]
    run_id: str
    folder: Path


def drift_features(status: str, *, shift: float) -> list[dict]:
    """Features as the inference service stores them: scores, p-values and histograms."""
    bins = ["<40", "40-50", "50-60", "60-70", ">70"]
    reference = [0.1, 0.25, 0.35, 0.2, 0.1]
    current = [max(0.0, r + shift * (i - 2) / 4) for i, r in enumerate(reference)]
    total = sum(current)
    current = [c / total for c in current]
    return [
        {"name": "age", "detector": "psi", "score": 0.05 + shift, "p_value": None,
         "status": status, "bins": bins, "reference": reference, "current": current},
        {"name": "chol", "detector": "psi", "score": 0.02, "p_value": None, "status": "ok",
         "bins": ["low", "mid", "high"], "reference": [0.3, 0.4, 0.3], "current": [0.28, 0.42, 0.3]},
    ]


def seed_store(folder: Path) -> Seeded:
    url = f"sqlite:///{folder / 'console.db'}"
    store = open_store(url)
    keys: dict[str, str] = {}
    with store.session() as session:
        admin, keys["admin"] = bootstrap_admin(session=session)
        for name, role in (("ops", "operator"), ("eve", "auditor"), ("app", "consumer")):
            keys[name] = enroll_principal(session=session, name=name, role=role)[1]
        fingerprints = {}
        for institution in INSTITUTIONS:
            _, line = generate_node_key(out_dir=folder, institution=institution)
            fingerprints[institution] = register_node_key(
                session=session, actor=admin, institution=institution, public_key=line
            ).fingerprint
        revoke_node_key(session=session, actor=admin, fingerprint_=fingerprints["Switzerland"])

    recorder = StoreRecorder(store, run_name="heart-demo")
    recorder.on_run_start(RunStart(
        institutions=[Institution(node_id=i, name=n, num_train=200, num_test=50, budget_epsilon=BUDGET,
                                  budget_delta=1e-5, require_secagg=True)
                      for i, n in enumerate(INSTITUTIONS)],
        settings={"plan": {"fw.dp": True, "fw.num-rounds": 3, "fw.noise-multiplier": 1.1,
                           "fw.max-grad-norm": 1.0, "fw.target-epsilon": -1.0},
                  "strategy": "fedavg", "secagg": True},
        secure=True,
    ))
    weights = [np.zeros((2, 4), dtype=np.float32), np.zeros(2, dtype=np.float32)]
    for server_round, (accuracy, loss) in enumerate(((0.61, 0.69), (0.74, 0.55), (0.81, 0.47)), start=1):
        trained = [n for n in INSTITUTIONS if not (server_round == 3 and n == "Switzerland")]
        refused = {"Switzerland": "budget: the next round would pass ε 2"} if server_round == 3 else {}
        dropped = {"Hungary": "timed out after 30 s"} if server_round == 2 else {}
        reports = [FitReport(institution=n, round=server_round, num_examples=200, epsilon=0.55 * server_round,
                             epsilon_budget=BUDGET, delta=1e-5, noise_multiplier=1.1, sample_rate=0.2,
                             steps=25, max_grad_norm=1.0)
                   for n in trained if n not in dropped]
        reports += [FitReport(institution=n, round=server_round, refused=True, reason=why,
                              epsilon=1.1, epsilon_budget=BUDGET, delta=1e-5)
                    for n, why in refused.items()]
        recorder.on_round_end(RoundRecord(
            round=server_round, loss=loss, accuracy=accuracy,
            accuracy_by_institution={n: accuracy for n in trained},
            epsilon={n: 0.55 * server_round for n in INSTITUTIONS},
            participants=[n for n in trained if n not in dropped], refused=refused, dropped=dropped,
            reports=reports, secagg={"num_shares": 3, "reconstruction_threshold": 2},
            duration_s=1.5 + server_round,
            checkpoint=RunCheckpoint(round=server_round, weights=weights, preprocessing="{}",
                                     model_spec={"kind": "logreg"}, run_config={"num-server-rounds": 3}),
        ))
    recorder.on_run_end(RunResult(weights=weights, model_spec={"kind": "logreg"}, preprocessing="{}",
                                  rounds=[], stopped_reason="completed every round"))
    schema = {"name": "heart", "features": [
        {"kind": "numeric", "name": "age", "range": [0, 120]},
        {"kind": "categorical", "name": "sex", "categories": ["Female", "Male"]},
    ], "target": {"name": "num", "labels": ["absent", "present"]}}
    with store.session() as session:
        ops = authenticate(session, keys["ops"])
        for round_ in (2, 3):
            artifact = folder / f"heart-r{round_}.onnx"
            artifact.write_bytes(f"onnx model after round {round_}".encode())
            register_model_version(
                session=session, actor=ops, name="heart", artifact_path=str(artifact),
                artifact_sha256=hashlib.sha256(artifact.read_bytes()).hexdigest(),
                input_schema=schema, output_labels=["absent", "present"], preprocessing={},
                model_spec={"kind": "logreg"}, run_id=recorder.run_id,
            )
        promote_model_version(session=session, actor=ops, name="heart", version=1)
        record_drift_change(session=session, model="heart", version=1, previous="ok", status="warning",
                            window_rows=500, window_span_s=3600.0,
                            features=drift_features("warning", shift=0.12))
    return Seeded(url=url, store=store, keys=keys, run_id=recorder.run_id, folder=folder)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    data = seed_store(tmp_path_factory.mktemp("console"))
    yield data
    data.store.dispose()


@pytest.fixture
def app_client(seeded: Seeded) -> Iterator[TestClient]:
    app = create_app(ConsoleSettings(database_url=seeded.url), store=seeded.store)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client


def sign_in(client: TestClient | httpx.Client, key: str) -> None:
    page = client.get("/signin")
    token = re.search(r'name="signin_token" value="([^"]+)"', page.text)
    assert token is not None
    response = client.post("/signin", data={"api_key": key, "signin_token": token.group(1), "next": "/"},
                           follow_redirects=False)
    assert response.status_code == 303, response.text


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LiveConsole:
    url: str
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def live_console(seeded: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveConsole]:
    """``fedwarden console`` as a real uvicorn process on a free port, until it answers."""
    port = free_port()
    log = tmp_path_factory.mktemp("console-log") / "console.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDWARDEN_") or k == "FEDWARDEN_AUDIT_KEY_DIR"}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "simulations.cli", "console", "--database-url", seeded.url,
             "--port", str(port), "--log-level", "warning"],
            stdout=sink, stderr=subprocess.STDOUT, env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"fedwarden console exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/signin", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"fedwarden console never answered: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield LiveConsole(url=base, process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def find_browser() -> tuple[str, str] | str:
    """``(chromium, chromedriver)`` paths, or why there are none."""
    binary = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                   if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if binary is None or driver is None:
        return ("no chromium/chromedriver on PATH: apt-get update && "
                "apt-get install -y chromium chromium-driver")
    return binary, driver


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    """Headless chromium through Selenium; skipped (with the reason) where there is none,
    failed instead where FEDWARDEN_REQUIRE_BROWSER=1 (CI installs one)."""
    found = find_browser()
    if isinstance(found, str):
        if os.environ.get("FEDWARDEN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests required but {found}")
        pytest.skip(f"browser tests need a browser: {found}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1000", "--disable-extensions"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser tests save their screenshots: $FEDWARDEN_CONSOLE_SCREENSHOTS, or a tmp folder."""
    chosen = os.environ.get("FEDWARDEN_CONSOLE_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("console-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
