"""The coordinator's SuperLink: its command line, and the refusals read from its log."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from privacy.errors import ConfigError
from privacy.pki import create_ca, fingerprint, generate_node_key, issue_server_certificate
from server.engine.flwr_cli import write_connection
from server.engine.superlink import RefusalWatcher, SuperLinkSettings, superlink_argv
from server.store import audit
from server.store.engine import open_store


def test_the_superlink_runs_with_tls_node_auth_a_database_and_no_runtime_installs(tmp_path):
    settings = SuperLinkSettings(
        pki_dir=tmp_path / "pki", state_dir=tmp_path / "state", port=9999, operator_port=9998
    )

    argv = superlink_argv(settings)

    for flag in (
        "--ssl-ca-certfile",
        "--ssl-certfile",
        "--ssl-keyfile",
        "--enable-supernode-auth",
        "--database",
        "--disable-runtime-dependency-installation",
    ):
        assert flag in argv
    assert "--insecure" not in argv
    assert argv[1:3] == ["-m", "server.engine.superlink_entry"]
    assert argv[argv.index("--fleet-port") + 1] == "9999"  # institutions: the Fleet API only
    assert argv[argv.index("--port") + 1] == "9998"  # Control and ServerAppIo: the operator's
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--database") + 1].endswith("superlink.db")
    assert settings.operator_address == "127.0.0.1:9998"


def test_the_operator_port_may_not_be_the_fleet_port(tmp_path):
    create_ca(out_dir=tmp_path)
    settings = SuperLinkSettings(pki_dir=tmp_path, state_dir=tmp_path, port=9093, operator_port=9093)
    (tmp_path / "server.crt").write_text("x")
    (tmp_path / "server.key").write_text("x")

    with pytest.raises(ConfigError, match="operator port and the Fleet port must differ"):
        settings.check()


def test_a_missing_pki_file_is_a_clear_error(tmp_path):
    create_ca(out_dir=tmp_path)

    with pytest.raises(ConfigError, match=r"server\.crt is missing"):
        SuperLinkSettings(pki_dir=tmp_path, state_dir=tmp_path).check()


def test_the_flwr_connection_names_the_superlink_and_the_ca(tmp_path):
    ca = create_ca(out_dir=tmp_path / "pki")
    issue_server_certificate(ca=ca, addresses=["127.0.0.1"], out_dir=tmp_path / "pki")

    path = write_connection(
        state_dir=tmp_path / "state", address="127.0.0.1:9093", ca_certificate=ca.certificate
    )

    text = path.read_text()
    assert 'default = "fedwarden"' in text
    assert 'address = "127.0.0.1:9093"' in text
    assert str(ca.certificate.resolve()) in text
    assert "insecure" not in text


def test_a_refusal_in_the_superlink_log_is_audited_with_the_key_fingerprint(tmp_path):
    private_path, line = generate_node_key(out_dir=tmp_path, institution="Rogue")
    private = serialization.load_ssh_private_key(private_path.read_bytes(), password=None)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # what Flower 1.41's SuperLink prints when an unregistered node tries to activate
    log_line = (
        "\x1b[91mERROR \x1b[0m:     [/v1/fleet/activate-node][ApiError:2004] Attempted to "
        f"register SuperNode with public key: {pem!r}, exception: No SuperNode found with "
        "the given public key.\n"
    )
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        watcher = RefusalWatcher(store)
        watcher("INFO: something else\n")
        watcher(log_line)
        with store.session() as session:
            event = audit.tail(session, limit=1)[0]
    finally:
        store.dispose()

    assert watcher.refusals == 1
    assert (event["action"], event["outcome"]) == ("node.refused", "denied")
    assert event["target"] == f"node:{fingerprint(line)}"
    assert event["details"]["reason"] == "No SuperNode found with the given public key."

