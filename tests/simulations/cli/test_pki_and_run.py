"""``fedwarden pki`` and ``fedwarden run`` in-process: files, registration, clear refusals."""

from __future__ import annotations

import stat


def test_pki_init_writes_the_ca_and_the_server_pair_and_never_overwrites_a_ca(cli, tmp_path):
    code, _ = cli("pki", "init", "--out", str(tmp_path), "--host", "10.0.0.5")
    again, message = cli("pki", "init", "--out", str(tmp_path))

    assert code == 0
    assert {p.name for p in tmp_path.iterdir()} == {"ca.crt", "ca.key", "server.crt", "server.key"}
    assert stat.S_IMODE((tmp_path / "server.key").stat().st_mode) == 0o600
    assert (again, "holds a CA already" in " ".join(message.split())) == (2, True)


def test_the_server_certificate_always_names_the_loopback_where_the_operator_apis_listen(
    cli, tmp_path
):
    import ipaddress

    from cryptography import x509

    cli("pki", "init", "--out", str(tmp_path), "--host", "10.0.0.5")
    certificate = x509.load_pem_x509_certificate((tmp_path / "server.crt").read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value

    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("127.0.0.1")
    }
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]


def test_pki_node_registers_with_a_key_and_is_refused_without_one(cli, tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    _, out = cli("admin", "init", "--database-url", url)
    token = out.strip().splitlines()[-1]

    denied, _ = cli(
        "pki", "node", "--institution", "VA", "--out", str(tmp_path / "a"), "--database-url", url
    )
    code, out = cli(
        "pki", "node", "--institution", "VA", "--out", str(tmp_path / "b"), "--database-url", url,
        api_key=token,
    )  # fmt: skip
    listed, listing = cli("pki", "nodes", "--database-url", url, "--json", api_key=token)

    assert denied == 6  # no API key: authentication fails
    assert list((tmp_path / "a").glob("VA*")) == []  # and no key pair is left behind
    assert code == 0 and "registered SHA256:" in out
    assert stat.S_IMODE((tmp_path / "b" / "VA.key").stat().st_mode) == 0o600
    assert listed == 0 and '"institution": "VA"' in listing
    assert "PRIVATE" not in out + listing


def _operator(cli, tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    cli("admin", "init", "--database-url", url)
    _, out = cli("admin", "enroll", "ops", "operator", "--database-url", url)
    return url, out.strip().splitlines()[-1]


def test_run_start_refuses_an_unknown_key_before_contacting_anyone(cli, tmp_path):
    url, operator = _operator(cli, tmp_path)
    config = tmp_path / "run.toml"
    config.write_text("num-server-rounds = 3\nrounds = 3\n")

    code, message = cli(
        "run", "start", "--config", str(config), "--state", str(tmp_path), "--database-url", url,
        api_key=operator,
    )  # fmt: skip

    assert code == 2
    assert "unknown run config key(s): rounds" in " ".join(message.split())


def test_run_commands_without_a_coordinator_say_so(cli, tmp_path):
    url, operator = _operator(cli, tmp_path)
    code, message = cli(
        "run", "status", "nope", "--state", str(tmp_path), "--database-url", url, api_key=operator
    )

    assert code == 8
    assert "no run 'nope'" in " ".join(message.split())


def test_run_commands_need_an_operator_key_and_are_audited(cli, tmp_path):
    from server.store import audit
    from server.store.engine import open_store

    url, operator = _operator(cli, tmp_path)
    where = ["--state", str(tmp_path), "--database-url", url]
    config = tmp_path / "run.toml"
    config.write_text("num-server-rounds = 1\n")

    without, _ = cli("run", "start", "--config", str(config), *where)
    cli("run", "list", *where, api_key=operator)  # authorized; no SuperLink to ask here

    store = open_store(url, upgrade=False)
    with store.session() as session:
        events = audit.tail(session, limit=5)
    store.dispose()
    assert without == 6  # no key: refused before anything reaches the SuperLink
    assert any(e["action"] == "authenticate" and e["outcome"] == "failure" for e in events)
    assert (events[-1]["actor"], events[-1]["action"]) == ("ops", "run.list")
    assert events[-1]["details"]["via_key"] == operator.split("_")[1]


def test_a_command_that_reads_a_store_never_creates_one(cli, tmp_path):
    url = f"sqlite:///{tmp_path / 'nothing-here.db'}"

    code, message = cli("audit", "verify", "--database-url", url, api_key="fw_x")

    assert code == 8 and "there is no store at" in " ".join(message.split())
    assert not (tmp_path / "nothing-here.db").exists()


def test_simulate_into_a_governed_store_needs_an_operator_key(cli, tmp_path):
    import pytest

    from server.engine.operator import authorize_simulation
    from server.errors import AuthenticationError
    from server.store.settings import StoreSettings

    fresh = StoreSettings.load(f"sqlite:///{tmp_path / 'fresh.db'}")
    url, operator = _operator(cli, tmp_path)
    governed = StoreSettings.load(url)

    assert authorize_simulation(settings=fresh, api_key=None) is None  # the simulator's own
    with pytest.raises(AuthenticationError):
        authorize_simulation(settings=governed, api_key=None)
    assert authorize_simulation(settings=governed, api_key=operator) == "ops"


def _completed_run(url, tmp_path, run_id="a74aff97-0000-4000-8000-000000000001"):
    from sqlalchemy import select

    from server.engine.runs import RunRecord
    from server.store.engine import open_store
    from server.store.models import Principal
    from server.store.runs import end_run, start_run

    store = open_store(url, upgrade=False)
    try:
        with store.session() as session:
            ops = session.scalars(select(Principal).where(Principal.name == "ops")).one()
            start_run(session=session, actor=ops, name="trial", config={"num-server-rounds": 2},
                      run_id=run_id)  # fmt: skip
            end_run(session=session, actor=ops, run_id=run_id, status="completed", reason="done")
    finally:
        store.dispose()
    RunRecord(run_id=run_id, config={"num-server-rounds": 2}, flower_runs=[5]).save(tmp_path)
    return run_id


def test_resuming_a_completed_run_is_refused_and_leaves_its_record(cli, tmp_path):
    from server.store.engine import open_store
    from server.store.models import Run

    url, operator = _operator(cli, tmp_path)
    run_id = _completed_run(url, tmp_path)
    where = ["--state", str(tmp_path), "--database-url", url]

    code, message = cli("run", "resume", run_id[:8], *where, api_key=operator)
    listed, listing = cli("run", "list", *where, api_key=operator)

    store = open_store(url, upgrade=False)
    with store.session() as session:
        status = session.get(Run, run_id).status
    store.dispose()
    assert code == 2 and "nothing to resume" in " ".join(message.split())
    assert status == "completed"
    assert listed == 0 and f"{run_id}\t5\tcompleted\t0/2 rounds" in listing
