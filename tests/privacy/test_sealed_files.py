"""Sealed files on disk: PKI and signing keys written sealed, read back, handed to Flower briefly."""

from __future__ import annotations

import stat

import pytest
from cryptography.hazmat.primitives import serialization

from privacy.envelope import Keyring, LocalKeyEncryptionKey, is_sealed
from privacy.errors import DecryptionError, KeyUnavailableError
from privacy.pki import create_ca, generate_node_key, issue_server_certificate
from privacy.sealed_files import materialized, read_private_file, write_private_file
from server.engine.superlink import SuperLinkSettings, superlink_argv
from server.store.anchoring import generate_signing_key, load_signing_key


@pytest.fixture
def keyring() -> Keyring:
    return Keyring([LocalKeyEncryptionKey.generate("kek-files")], active="kek-files")


def test_pki_keys_are_sealed_and_the_ca_key_still_signs(tmp_path, keyring):
    ca = create_ca(out_dir=tmp_path, keyring=keyring)

    server = issue_server_certificate(
        ca=ca, addresses=["127.0.0.1"], out_dir=tmp_path, keyring=keyring
    )
    node_key, _ = generate_node_key(out_dir=tmp_path, institution="Basel", keyring=keyring)

    for path in (ca.private_key, server.private_key, node_key):
        blob = path.read_bytes()
        assert is_sealed(blob) and b"PRIVATE KEY" not in blob
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pem = read_private_file(server.private_key, keyring=keyring, what="the TLS key")
    assert serialization.load_pem_private_key(pem, password=None)
    with pytest.raises(KeyUnavailableError, match="encrypted"):
        issue_server_certificate(ca=ca, addresses=["127.0.0.1"], out_dir=tmp_path / "x")


def test_the_signing_key_is_sealed_and_a_wrong_kek_fails_clearly(tmp_path, keyring):
    path = tmp_path / "coordinator.key"
    public = generate_signing_key(path, keyring=keyring)

    assert is_sealed(path.read_bytes())
    assert load_signing_key(path, keyring=keyring).public_key()
    assert public
    impostor = Keyring([LocalKeyEncryptionKey.generate("kek-files")], active="kek-files")
    with pytest.raises(DecryptionError, match=r"cannot decrypt the signing key .*kek-files"):
        load_signing_key(path, keyring=impostor)


def test_a_sealed_key_is_materialized_for_flower_only_inside_the_block(tmp_path, keyring):
    ca = create_ca(out_dir=tmp_path, keyring=keyring)
    issue_server_certificate(ca=ca, addresses=["127.0.0.1"], out_dir=tmp_path, keyring=keyring)
    settings = SuperLinkSettings(pki_dir=tmp_path, state_dir=tmp_path / "state")

    with materialized(tmp_path / "server.key", keyring=keyring, what="the TLS key") as plain:
        argv = superlink_argv(settings, program="flower-superlink", key_file=plain)
        assert b"PRIVATE KEY" in plain.read_bytes()
        assert stat.S_IMODE(plain.stat().st_mode) == 0o600
        assert stat.S_IMODE(plain.parent.stat().st_mode) == 0o700
        assert argv[argv.index("--ssl-keyfile") + 1] == str(plain)
    assert not plain.exists() and not plain.parent.exists()


def test_a_plaintext_key_is_used_in_place_and_never_overwritten(tmp_path):
    path = tmp_path / "plain.key"
    write_private_file(path, b"secret", keyring=None, what="a key")

    with materialized(path, keyring=None, what="a key") as same:
        assert same == path
    with pytest.raises(Exception, match="never overwritten"):
        write_private_file(path, b"other", keyring=None, what="a key")
    assert path.read_bytes() == b"secret"
