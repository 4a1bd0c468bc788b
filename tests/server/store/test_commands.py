"""``fedwarden db|admin|audit``: what they print, and one line and an exit code for bad input."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import select, text

from server.store import audit
from server.store.audit_key import default_locator
from server.store.engine import open_store
from server.store.models import Principal
from server.store.settings import StoreSettings

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/test"


@pytest.fixture
def admin_key(cli, store_url):
    code, output = cli("admin", "init", "--database-url", store_url)
    assert code == 0, output
    return output.strip().splitlines()[-1]


@pytest.fixture
def make_key(cli, store_url, admin_key):
    """``make_key(name, role)``: a principal and its API key, made through the CLI."""

    def make(name: str, role: str, *extra: str) -> str:
        code, output = cli(
            "admin", "enroll", name, role, *extra, "--database-url", store_url, api_key=None
        )
        assert code == 0, output
        return output.strip().splitlines()[-1]

    return make


def _events(url, limit=5):
    store = open_store(url)
    with store.session() as session:
        events = audit.tail(session, limit=limit)
    store.dispose()
    return events


def _principals(url):
    store = open_store(url)
    with store.session() as session:
        names = set(session.scalars(select(Principal.name)))
    store.dispose()
    return names


def _one_error_line(output: str) -> str:
    assert "Traceback" not in output
    assert output.count("error:") == 1, output
    assert output.lstrip().startswith("error:"), output
    return " ".join(output.split())


def test_init_prints_the_admin_key_once(cli, store_url, admin_key):
    assert admin_key.startswith("fw_")

    code, output = cli("admin", "init", "--database-url", store_url)

    assert code == 8
    assert "runs once" in _one_error_line(output)
    assert "fw_" not in output


def test_governance_round_trip(cli, store_url, admin_key, make_key):
    url = ["--database-url", store_url]

    assert cli("admin", "create-institution", "Cleveland", *url, api_key=admin_key)[0] == 0
    make_key("cleo", "institution", "--institution", "Cleveland")
    assert cli("admin", "grant", "cleo", "consumer", *url, api_key=admin_key)[0] == 0
    assert cli("admin", "revoke", "cleo", "consumer", *url, api_key=admin_key)[0] == 0
    code, listing = cli("admin", "list", *url, api_key=admin_key)

    assert code == 0
    assert "Cleveland" in listing and "cleo" in listing and "institution" in listing
    actions = [e["action"] for e in _events(store_url, limit=5)]
    assert actions == [
        "institution.create",
        "principal.enroll",
        "role.grant",
        "role.revoke",
        "directory.read",
    ]


def test_audit_verify_export_and_tail(cli, store_url, make_key, tmp_path):
    auditor = make_key("aude", "auditor")
    url = ["--database-url", store_url]

    code, verified = cli("audit", "verify", *url, api_key=auditor)
    assert code == 0 and verified.startswith("chain intact: ")
    out = tmp_path / "audit.jsonl"
    assert cli("audit", "export", "--out", str(out), *url, api_key=auditor)[0] == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    key = default_locator(StoreSettings.load(store_url)).require_key()
    assert audit.verify_events(lines, key=key).broken is None
    assert [e["action"] for e in lines][-1] == "audit.verify"
    code, tail = cli("audit", "tail", "-n", "3", *url, api_key=auditor)
    assert code == 0 and "audit.export" in tail


FORGED = (
    "INSERT INTO audit_events (seq, time, actor, action, target, outcome, details, prev_hash, hash)"
    " VALUES (5, '2026-01-01 00:00:00.000000', 'admin', 'role.grant', 'principal:mallory',"
    f" 'success', '{{}}', '{'a' * 64}', '{'b' * 64}')"
)


@pytest.mark.parametrize(
    ("tamper", "seq"),
    [
        (['UPDATE audit_events SET details = \'{"role": "admin"}\' WHERE seq = 3'], 3),
        (["DELETE FROM audit_events WHERE seq = 2"], 2),
        ([FORGED], 5),
        (
            [
                "UPDATE audit_events SET seq = -1 WHERE seq = 2",
                "UPDATE audit_events SET seq = 2 WHERE seq = 3",
                "UPDATE audit_events SET seq = 3 WHERE seq = -1",
            ],
            2,
        ),
    ],
    ids=["modified", "deleted", "inserted", "reordered"],
)
def test_audit_verify_names_the_first_broken_event(cli, store_url, make_key, tamper, seq):
    auditor = make_key("aude", "auditor")  # 1 genesis, 2 store, 3 admin, 4 aude
    store = open_store(store_url)
    with store.engine.begin() as connection:
        for statement in tamper:
            connection.execute(text(statement))
    store.dispose()

    code, output = cli("audit", "verify", "--database-url", store_url, api_key=auditor)

    assert code == 9
    assert f"audit chain broken at event {seq}" in _one_error_line(output)
    last = _events(store_url, limit=1)[0]
    assert (last["action"], last["outcome"], last["details"]["broken_seq"]) == (
        "audit.verify",
        "failure",
        seq,
    )


def test_checkpoint_receipt_round_trip(cli, store_url, admin_key, make_key, tmp_path, monkeypatch):
    auditor = make_key("aude", "auditor")
    key, receipt = tmp_path / "coordinator.pem", tmp_path / "receipt.json"
    url = ["--database-url", store_url]

    code, output = cli("audit", "keygen", "--key", str(key))
    assert code == 0 and "PRIVATE" not in output
    public = output.split("FEDWARDEN_AUDIT_PUBLIC_KEY=")[1].split()[0]
    code, output = cli(
        "audit", "checkpoint", "--key", str(key), "--out", str(receipt), *url, api_key=admin_key
    )
    assert code == 0, output
    code, output = cli("audit", "verify", "--receipt", str(receipt), *url, api_key=auditor)
    assert code == 2 and "pinned public key" in _one_error_line(output)  # nothing pinned
    pinned = tmp_path / "coordinator.pub"
    pinned.write_text(public + "\n")
    monkeypatch.setenv("FEDWARDEN_AUDIT_PUBLIC_KEY", str(pinned))
    code, output = cli("audit", "verify", "--receipt", str(receipt), *url, api_key=auditor)
    assert code == 0 and "holds receipt event" in output, output

    forged = json.loads(receipt.read_text()) | {"seq": 1}
    receipt.write_text(json.dumps(forged))
    code, output = cli("audit", "verify", "--receipt", str(receipt), *url, api_key=auditor)
    assert code == 9 and "invalid signature" in _one_error_line(output)


def test_a_receipt_signed_with_another_key_fails_against_the_pinned_one(
    cli, store_url, admin_key, make_key, tmp_path, monkeypatch
):
    auditor = make_key("aude", "auditor")
    url = ["--database-url", store_url]
    ours, theirs, receipt = tmp_path / "ours.pem", tmp_path / "theirs.pem", tmp_path / "r.json"
    public = cli("audit", "keygen", "--key", str(ours))[1].split("AUDIT_PUBLIC_KEY=")[1].split()[0]
    cli("audit", "keygen", "--key", str(theirs))
    monkeypatch.setenv("FEDWARDEN_AUDIT_PUBLIC_KEY", public)
    cli("audit", "checkpoint", "--key", str(theirs), "--out", str(receipt), *url, api_key=admin_key)

    code, output = cli("audit", "verify", "--receipt", str(receipt), *url, api_key=auditor)

    assert code == 9 and "another key" in _one_error_line(output)


def test_db_upgrade_and_current(cli, store_url):
    code, output = cli("db", "upgrade", "--database-url", store_url)
    assert code == 0 and "upgraded from revision (empty)" in output

    code, output = cli("db", "upgrade", "--database-url", store_url)
    assert code == 0 and "newest revision" in output
    code, output = cli("db", "current", "--database-url", store_url)
    assert code == 0 and "(up to date)" in output


def test_the_url_can_come_from_the_environment(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("FEDWARDEN_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")

    code, _ = cli("db", "upgrade")

    assert code == 0 and (tmp_path / "env.db").exists()


@pytest.mark.parametrize("case", ["wrong", "revoked", "missing", "unknown"])
def test_bad_keys_fail_in_one_line_and_are_audited(cli, store_url, admin_key, make_key, case):
    auditor = make_key("aude", "auditor")
    url = ["--database-url", store_url]
    presented = {
        "wrong": auditor[:-3] + "xyz",
        "revoked": auditor,
        "missing": "",
        "unknown": "fw_0123456789ab_" + "s" * 43,
    }[case]
    if case == "revoked":
        prefix = auditor.split("_")[1]
        assert cli("admin", "revoke-key", prefix, *url, api_key=admin_key)[0] == 0

    code, output = cli("audit", "verify", *url, api_key=presented)

    assert code == 6
    assert "authentication failed" in _one_error_line(output)
    last = _events(store_url, limit=1)[0]
    assert (last["action"], last["outcome"]) == ("authenticate", "failure")


def test_a_missing_permission_fails_in_one_line_and_is_audited(cli, store_url, make_key):
    consumer = make_key("carl", "consumer")

    code, output = cli(
        "admin",
        "create-principal",
        "eve",
        "--role",
        "admin",
        "--database-url",
        store_url,
        api_key=consumer,
    )

    assert code == 7
    assert "'carl' lacks permission 'principal:manage'" in _one_error_line(output)
    assert "eve" not in _principals(store_url)
    last = _events(store_url, limit=1)[0]
    assert (last["actor"], last["action"], last["outcome"]) == ("carl", "authorize", "denied")


@pytest.mark.parametrize(
    ("args", "code", "phrase", "absent"),
    [
        (["grant", "ghost", "auditor"], 8, "no principal called 'ghost'", None),
        (["create-principal", "bob", "--role", "wizard"], 2, "unknown role 'wizard'", "bob"),
        (
            ["create-principal", "bob", "--role", "institution", "--institution", "Atlantis"],
            8,
            "no institution called 'Atlantis'",
            "bob",
        ),
    ],
)
def test_bad_requests_write_nothing_but_the_refusal(
    cli, store_url, admin_key, args, code, phrase, absent
):
    before = _events(store_url, limit=1)[0]["seq"]

    exit_code, output = cli("admin", *args, "--database-url", store_url, api_key=admin_key)

    assert exit_code == code
    assert phrase in _one_error_line(output)
    if absent is not None:
        assert absent not in _principals(store_url)
    new = [e for e in _events(store_url, limit=5) if e["seq"] > before]
    assert [(e["actor"], e["outcome"]) for e in new] == [("admin", "error")]


def test_a_malformed_url_is_a_config_error(cli):
    code, output = cli("audit", "tail", "--database-url", "nonsense://", api_key="fw_x")

    assert code == 2
    assert "unsupported database" in _one_error_line(output)


def test_an_unreachable_database_fails_fast_in_one_line(cli):
    started = time.perf_counter()

    code, output = cli("audit", "verify", "--database-url", UNREACHABLE, api_key="fw_x")

    assert code == 8
    assert "cannot be used" in _one_error_line(output)
    # Not a speed target: an unreachable host must not hang for libpq's default minutes.
    assert time.perf_counter() - started < 30
