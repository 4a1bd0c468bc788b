"""Acceptance: with encryption at rest on, a run, an export and a served model leave no weights
and no key material in any plaintext file, and no secret in any log line or output.

Every step goes through the ``fedwarden`` command line (the simulation in its own process,
logging at DEBUG), then the inference service answers over the same store. Afterwards every
file under the test's folder (but the keyring itself) is read: sealed files must be the
ones expected, and no other file may hold a weight, a private key, a KEK or an API key's
secret. A keyring with the wrong KEK then exports and serves nothing. Slow (Ray), run in CI.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from deploy.api import create_app
from deploy.serving_model import frame_to_rows
from deploy.settings import ServeSettings
from privacy.envelope import is_sealed
from privacy.keyring import EncryptionSettings, create_kek, load_keyring
from privacy.sealed_files import read_file
from server.checkpoints import open_checkpoint
from server.store.engine import open_store
from server.store.models import Checkpoint, Run
from simulations.cli.app import main
from simulations.scenario import Scenario

pytestmark = pytest.mark.slow

DEBUG_SIMULATE = (
    "import logging, sys; logging.basicConfig(level=logging.DEBUG, stream=sys.stderr); "
    "from simulations.cli.app import main; sys.argv[0] = 'fedwarden'; main()"
)


class Cli:
    """``fedwarden ARGS`` in-process; keeps every output that is not a key shown once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
        self.monkeypatch, self.capsys = monkeypatch, capsys
        self.outputs: list[str] = []

    def __call__(self, *args: str, shows_key: bool = False, code: int = 0) -> str:
        self.monkeypatch.setattr(sys, "argv", ["fedwarden", *args])
        try:
            main()
            exit_code = 0
        except SystemExit as exc:
            exit_code = int(exc.code or 0)
        captured = self.capsys.readouterr()
        output = captured.out + captured.err
        assert exit_code == code, output
        if shows_key:  # the one line a new key is printed on is the point of the command
            self.outputs.append("\n".join(output.strip().splitlines()[:-1]) + captured.err)
            return output.strip().splitlines()[-1]
        self.outputs.append(output)
        return output


def test_a_run_and_an_export_leave_no_weights_or_keys_in_plaintext(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog
):
    for name in [n for n in os.environ if n.startswith("FEDWARDEN_")]:
        monkeypatch.delenv(name)
    caplog.set_level(logging.DEBUG)
    keyring_dir, out = tmp_path / "keyring", tmp_path / "run"
    monkeypatch.setenv("FEDWARDEN_KEYRING", str(keyring_dir))
    cli = Cli(monkeypatch, capsys)
    cli("keys", "create")

    simulated = subprocess.run(
        [sys.executable, "-c", DEBUG_SIMULATE, "simulate", "--institutions", "2", "--rounds", "2",
         "--no-baseline", "--out", str(out)],
        check=False, capture_output=True, text=True, timeout=600, env=dict(os.environ),
    )  # fmt: skip
    assert simulated.returncode == 0, simulated.stderr[-3000:]
    url = f"sqlite:///{out / 'fedwarden.db'}"
    monkeypatch.setenv("FEDWARDEN_DATABASE_URL", url)

    tokens = {"admin": cli("admin", "init", shows_key=True)}
    monkeypatch.setenv("FEDWARDEN_API_KEY", tokens["admin"])
    for name, role in (("ops", "operator"), ("app", "consumer")):
        cli("admin", "create-principal", name, "--role", role)
        tokens[name] = cli("admin", "issue-key", name, shows_key=True)
    prefix = tokens["app"].split("_")[1]
    tokens["app-rotated"] = cli("admin", "rotate-key", prefix, "--overlap-hours", "1", shows_key=True)
    cli("pki", "init", "--out", str(tmp_path / "pki"))
    cli("audit", "keygen", "--key", str(tmp_path / "coordinator.key"))
    cli("audit", "checkpoint", "--key", str(tmp_path / "coordinator.key"),
        "--out", str(tmp_path / "receipt.json"))  # fmt: skip
    store = open_store(url, keyring=load_keyring())
    with store.session() as session:
        run_id = session.scalars(select(Run.id)).one()
        blob = session.scalars(select(Checkpoint.blob).order_by(Checkpoint.round.desc())).first()
    store.dispose()
    monkeypatch.setenv("FEDWARDEN_API_KEY", tokens["ops"])
    cli("export", "--run", run_id, "--name", "exported", "--artifact-dir", str(tmp_path / "export"))
    cli("models", "promote", "heart-disease", "1")

    scenario = Scenario(institutions=2)
    test_rows = scenario.all_institutions()[0].test.head(5)
    ring = load_keyring()
    checkpoint = open_checkpoint(blob, keyring=ring, what="the last checkpoint")
    spec_rows = _rows(checkpoint, test_rows)
    with TestClient(create_app(ServeSettings(database_url=url, drift_monitoring=False))) as client:
        for token in (tokens["app"], tokens["app-rotated"]):
            response = client.post("/v1/models/heart-disease/predict", json={"rows": spec_rows},
                                   headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            assert response.status_code == 200, response.text
        bad = client.post("/v1/models/heart-disease/predict", json={"rows": "not rows"},
                          headers={"Authorization": f"Bearer {tokens['app']}"})  # fmt: skip
        assert bad.status_code == 422 and "not rows" not in bad.text

    # Rotate the KEK: everything is rewrapped, the old KEK can go.
    old_kek = ring.active_id if ring is not None else ""
    monkeypatch.setenv("FEDWARDEN_API_KEY", tokens["admin"])
    paths = ["--path", str(tmp_path / "pki"), "--path", str(tmp_path / "coordinator.key")]
    cli("keys", "rotate", *paths)
    cli("keys", "retire", old_kek, *paths)
    assert "envelopes" in cli("keys", "status", *paths)

    # Every secret that was used, and every weight.
    ring = load_keyring()
    assert ring is not None and ring.active_id != old_kek
    secrets = {f"token {name}": token.split("_", 2)[2].encode() for name, token in tokens.items()}
    for path in keyring_dir.glob("*.kek"):
        key_b64 = json.loads(path.read_text())["key"]
        secrets[f"KEK {path.stem}"] = key_b64.encode()
        secrets[f"KEK {path.stem} raw"] = base64.b64decode(key_b64)
    secrets[f"KEK {old_kek} (retired)"] = b"retired"  # placeholder: its file is gone
    private_files = [tmp_path / "pki" / "ca.key", tmp_path / "pki" / "server.key",
                     tmp_path / "coordinator.key"]  # fmt: skip
    for path in private_files:
        pem = read_file(path, keyring=ring).decode()
        body = "".join(pem.strip().splitlines()[1:-1])
        secrets[f"private key {path.name}"] = body[10:50].encode()
    weights = {
        f"weights[{i}]": array.astype("float32").tobytes()[:24]
        for i, array in enumerate(checkpoint.weights)
        if array.size >= 6
    }
    assert weights
    secrets.pop(f"KEK {old_kek} (retired)")

    sealed, scanned = [], 0
    for path in sorted(p for p in tmp_path.rglob("*") if p.is_file()):
        if keyring_dir in path.parents:
            continue
        data = path.read_bytes()
        if is_sealed(data):
            sealed.append(path.relative_to(tmp_path))
            continue
        scanned += 1
        for what, needle in {**secrets, **weights}.items():
            assert needle not in data, f"{what} in plaintext in {path}"
        assert b"PRIVATE KEY-----" not in data, f"a private key in plaintext in {path}"
    assert scanned >= 5  # summary.json, ledger.jsonl, the plot, the store, the receipt, ...
    names = {str(p) for p in sealed}
    assert {"pki/ca.key", "pki/server.key", "coordinator.key"} <= names
    assert any(n.startswith("run/artifacts/") for n in names)
    assert any(n.startswith("export/") for n in names)

    logs = "\n".join([simulated.stdout, simulated.stderr, caplog.text, *cli.outputs])
    assert "DEBUG" in simulated.stderr  # the run did log at DEBUG
    for what, needle in secrets.items():
        text = needle.decode("latin-1")
        assert text not in logs, f"{what} appears in a log line or an output"
    assert "PRIVATE KEY-----" not in logs

    # The wrong KEK (same id, other key material): nothing exports, nothing is served.
    wrong = tmp_path / "wrong-keyring"
    create_kek(wrong, kek_id=ring.active_id)
    monkeypatch.setenv("FEDWARDEN_KEYRING", str(wrong))
    monkeypatch.setenv("FEDWARDEN_API_KEY", tokens["ops"])
    refused = cli("export", "--run", run_id, "--name", "again", "--artifact-dir",
                  str(tmp_path / "again"), code=72)  # fmt: skip
    assert "cannot decrypt" in refused and "does not open under KEK" in refused
    assert not (tmp_path / "again").exists() or not any((tmp_path / "again").iterdir())
    assert load_keyring(EncryptionSettings.load()) is not None
    with TestClient(create_app(ServeSettings(database_url=url, drift_monitoring=False))) as client:
        response = client.post("/v1/models/heart-disease/predict", json={"rows": spec_rows},
                               headers={"Authorization": f"Bearer {tokens['app-rotated']}"})  # fmt: skip
    assert response.status_code != 200 and "predictions" not in response.json()


def _rows(checkpoint, frame) -> list[dict]:
    from client.preprocessing import PreprocessingSpec

    spec = PreprocessingSpec.from_json(checkpoint.preprocessing)
    return frame_to_rows(frame[spec.schema.feature_names], spec)
