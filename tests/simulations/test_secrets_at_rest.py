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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from deploy.api import create_app
from deploy.serving_model import frame_to_rows
from deploy.settings import ServeSettings
from privacy.envelope import Keyring, is_sealed
from privacy.keyring import create_kek, load_keyring
from privacy.sealed_files import read_file
from server.checkpoint_format import RunCheckpoint, open_checkpoint
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
    audit_keys = tmp_path / "audit-keys"  # the store's audit (HMAC) key, sealed like the rest
    monkeypatch.setenv("FEDWARDEN_AUDIT_KEY_DIR", str(audit_keys))
    caplog.set_level(logging.DEBUG)
    keyring_dir = tmp_path / "keyring"
    monkeypatch.setenv("FEDWARDEN_KEYRING", str(keyring_dir))
    cli = Cli(monkeypatch, capsys)

    run = _run_export_and_serve(tmp_path, cli, monkeypatch)

    ring = load_keyring()
    assert ring is not None and ring.active_id != run.old_kek
    secrets = _secrets_used(tmp_path, run.tokens, ring)
    weights = {
        f"weights[{i}]": array.astype("float32").tobytes()[:24]
        for i, array in enumerate(run.checkpoint.weights)
        if array.size >= 6
    }
    sealed = _scan_plaintext_files(tmp_path, {**secrets, **weights})
    assert {"pki/ca.key", "pki/server.key", "coordinator.key"} <= sealed
    assert any(n.startswith("audit-keys/") and n.endswith(".key") for n in sealed)
    assert any(n.startswith("run/artifacts/") for n in sealed)
    assert any(n.startswith("export/") for n in sealed)
    logs = "\n".join([run.simulated.stdout, run.simulated.stderr, caplog.text, *cli.outputs])
    assert "DEBUG" in run.simulated.stderr  # the run did log at DEBUG
    for what, needle in secrets.items():
        assert needle.decode("latin-1") not in logs, f"{what} appears in a log line or an output"
    assert "PRIVATE KEY-----" not in logs

    # The wrong KEK (same id, other key material): nothing exports, nothing is served.
    wrong = tmp_path / "wrong-keyring"
    create_kek(wrong, kek_id=ring.active_id)
    monkeypatch.setenv("FEDWARDEN_KEYRING", str(wrong))
    monkeypatch.setenv("FEDWARDEN_API_KEY", run.tokens["ops"])
    refused = cli("export", "--run", run.run_id, "--name", "again", "--artifact-dir",
                  str(tmp_path / "again"), code=72)  # fmt: skip
    assert "cannot decrypt" in refused and "does not open under KEK" in refused
    assert not (tmp_path / "again").exists() or not any((tmp_path / "again").iterdir())
    assert _predict(run.url, run.rows, run.tokens["app"]).status_code != 200


@dataclass
class Done:
    tokens: dict[str, str]
    run_id: str
    url: str
    checkpoint: RunCheckpoint
    simulated: subprocess.CompletedProcess[str]
    rows: list[dict]
    old_kek: str


def _run_export_and_serve(tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> Done:
    """keys create, simulate at DEBUG, enrolled principals, the admin's key rotated, PKI,
    signing key, receipt, export, promote, a prediction, KEK rotation and retirement."""
    cli("keys", "create")
    out = tmp_path / "run"
    simulated = subprocess.run(
        [sys.executable, "-c", DEBUG_SIMULATE, "simulate", "--institutions", "3", "--rounds", "2",
         "--no-baseline", "--out", str(out)],
        check=False, capture_output=True, text=True, timeout=600, env=dict(os.environ),
    )  # fmt: skip
    assert simulated.returncode == 0, simulated.stderr[-3000:]
    url = f"sqlite:///{out / 'fedwarden.db'}"
    monkeypatch.setenv("FEDWARDEN_DATABASE_URL", url)
    tokens = {"admin": cli("admin", "init", shows_key=True)}
    monkeypatch.setenv("FEDWARDEN_API_KEY", tokens["admin"])
    for name, role in (("ops", "operator"), ("app", "consumer")):  # as the coordinator's owner
        tokens[name] = cli("admin", "enroll", name, role, shows_key=True)
    # Separated duties: an admin rotates keys of roles it holds (here its own), not a consumer's.
    prefix = tokens["admin"].split("_")[1]
    tokens["admin-rotated"] = cli(
        "admin", "rotate-key", prefix, "--overlap-hours", "1", shows_key=True
    )
    monkeypatch.setenv("FEDWARDEN_API_KEY", tokens["admin-rotated"])
    cli("pki", "init", "--out", str(tmp_path / "pki"))
    cli("audit", "keygen", "--key", str(tmp_path / "coordinator.key"))
    cli("audit", "checkpoint", "--key", str(tmp_path / "coordinator.key"),
        "--out", str(tmp_path / "receipt.json"))  # fmt: skip
    ring = load_keyring()
    assert ring is not None
    store = open_store(url, keyring=ring)
    with store.session() as session:
        run_id = session.scalars(select(Run.id)).one()
        blob = session.scalars(select(Checkpoint.blob).order_by(Checkpoint.round.desc())).first()
    store.dispose()
    assert blob is not None and is_sealed(blob)
    checkpoint = open_checkpoint(blob, keyring=ring, what="the last checkpoint")
    monkeypatch.setenv("FEDWARDEN_API_KEY", tokens["ops"])
    cli("export", "--run", run_id, "--name", "exported", "--artifact-dir", str(tmp_path / "export"))
    cli("models", "promote", "heart-disease", "1")
    rows = _rows(checkpoint, Scenario(institutions=3).all_institutions()[0].test.head(5))
    response = _predict(url, rows, tokens["app"])
    assert response.status_code == 200, response.text
    monkeypatch.setenv("FEDWARDEN_API_KEY", tokens["admin-rotated"])
    paths = ["--path", str(tmp_path / "pki"), "--path", str(tmp_path / "coordinator.key")]
    cli("keys", "rotate", *paths)
    cli("keys", "retire", ring.active_id, *paths)
    assert "envelopes" in cli("keys", "status", *paths)
    return Done(tokens=tokens, run_id=run_id, url=url, checkpoint=checkpoint,
                simulated=simulated, rows=rows, old_kek=ring.active_id)  # fmt: skip


def _predict(url: str, rows: list[dict], token: str) -> Any:
    with TestClient(create_app(ServeSettings(database_url=url, drift_monitoring=False))) as client:
        response = client.post("/v1/models/heart-disease/predict", json={"rows": rows},
                               headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        malformed = client.post("/v1/models/heart-disease/predict", json={"rows": "not rows"},
                                headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert malformed.status_code in (401, 404, 422) and "not rows" not in malformed.text
    return response


def _secrets_used(tmp_path: Path, tokens: dict[str, str], ring: Keyring) -> dict[str, bytes]:
    """API keys' secrets, every KEK (base64 and raw) and a slice of every private key's body."""
    secrets = {f"token {name}": token.split("_", 2)[2].encode() for name, token in tokens.items()}
    for path in (tmp_path / "audit-keys").glob("*.key"):
        secret = read_file(path, keyring=ring).decode().split()[-1]
        secrets[f"audit key {path.name}"] = secret.encode()
        secrets[f"audit key {path.name} raw"] = bytes.fromhex(secret)
    for path in (tmp_path / "keyring").glob("*.kek"):
        key_b64 = json.loads(path.read_text())["key"]
        secrets[f"KEK {path.stem}"] = key_b64.encode()
        secrets[f"KEK {path.stem} raw"] = base64.b64decode(key_b64)
    for path in (tmp_path / "pki" / "ca.key", tmp_path / "pki" / "server.key",
                 tmp_path / "coordinator.key"):  # fmt: skip
        pem = read_file(path, keyring=ring).decode()
        body = "".join(pem.strip().splitlines()[1:-1])
        secrets[f"private key {path.name}"] = private_part(pem, body).encode()
    return secrets


def _scan_plaintext_files(root: Path, needles: dict[str, bytes]) -> set[str]:
    """Assert no plaintext file under ``root`` (the keyring aside) holds a needle; return the
    sealed files' relative paths."""
    sealed, scanned = set(), 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if root / "keyring" in path.parents:
            continue
        data = path.read_bytes()
        if is_sealed(data):
            sealed.add(str(path.relative_to(root)))
            continue
        scanned += 1
        for what, needle in needles.items():
            assert needle not in data, f"{what} in plaintext in {path}"
        assert b"PRIVATE KEY-----" not in data, f"a private key in plaintext in {path}"
    assert scanned >= 5  # summary.json, ledger.jsonl, the plot, the store, the receipt, ...
    return sealed


def _rows(checkpoint, frame) -> list[dict]:
    from client.contract.preprocessing import PreprocessingSpec

    spec = PreprocessingSpec.from_json(checkpoint.preprocessing)
    return frame_to_rows(frame[spec.schema.feature_names], spec)


def private_part(pem: str, body: str) -> str:
    """40 base64 characters of the private key itself (not the format's header, not the
    public key that the certificate also holds)."""
    if "OPENSSH" in pem:
        return body[-64:-24]  # the private scalar, before the comment and padding
    return body[52:92] if len(body) > 100 else body[22:62]  # PKCS#8: EC P-384, Ed25519
