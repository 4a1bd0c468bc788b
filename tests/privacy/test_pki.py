"""The consortium PKI: a CA, the coordinator's certificate, node keys Flower accepts."""

from __future__ import annotations

import ipaddress
import stat
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from privacy.errors import ConfigError
from privacy.pki import (
    check_node_public_key,
    create_ca,
    fingerprint,
    generate_node_key,
    issue_server_certificate,
    openssh_from_pem,
)


def test_the_server_certificate_is_signed_by_the_ca_and_names_every_address(tmp_path):
    ca = create_ca(out_dir=tmp_path)

    server = issue_server_certificate(
        ca=ca, addresses=["127.0.0.1", "coord.example.org"], out_dir=tmp_path
    )

    ca_cert = x509.load_pem_x509_certificate(ca.certificate.read_bytes())
    cert = x509.load_pem_x509_certificate(server.certificate.read_bytes())
    cert.verify_directly_issued_by(ca_cert)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert names.get_values_for_type(x509.DNSName) == ["coord.example.org"]
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_private_keys_are_written_for_the_owner_only(tmp_path):
    ca = create_ca(out_dir=tmp_path)
    server = issue_server_certificate(ca=ca, addresses=["127.0.0.1"], out_dir=tmp_path)
    node_key, _ = generate_node_key(out_dir=tmp_path / "nodes", institution="Cleveland Clinic")

    for path in (ca.private_key, server.private_key, node_key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.certificate.stat().st_mode) & 0o044  # certificates are public


def test_a_node_key_pair_is_openssh_ecdsa_and_its_halves_match(tmp_path):
    private_path, line = generate_node_key(out_dir=tmp_path, institution="Hungary")

    private = serialization.load_ssh_private_key(private_path.read_bytes(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    assert line.startswith(public.decode() + " ")
    assert line.endswith("fedwarden:Hungary")
    assert (tmp_path / "Hungary.pub").read_text().strip() == line
    assert check_node_public_key(line) == public.decode()


def test_the_fingerprint_is_what_ssh_keygen_prints(tmp_path):
    _, line = generate_node_key(out_dir=tmp_path, institution="VA")
    try:
        done = subprocess.run(
            ["ssh-keygen", "-lf", str(tmp_path / "VA.pub")],
            capture_output=True,
            text=True,
            check=True,
        )
    except FileNotFoundError:
        pytest.skip("ssh-keygen is not installed")

    assert done.stdout.split()[1] == fingerprint(line)


def test_a_pem_public_key_as_flower_logs_it_maps_back_to_the_openssh_key(tmp_path):
    private_path, line = generate_node_key(out_dir=tmp_path, institution="Switzerland")
    private = serialization.load_ssh_private_key(private_path.read_bytes(), password=None)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    assert fingerprint(openssh_from_pem(pem)) == fingerprint(line)


@pytest.mark.parametrize(
    "line",
    ["", "ssh-rsa AAAAB3NzaC1yc2E", "ecdsa-sha2-nistp384 not-base64!", "ecdsa-sha2-nistp384"],
)
def test_a_key_flower_would_not_take_is_refused(line):
    with pytest.raises(ConfigError):
        check_node_public_key(line)


def test_bad_certificate_requests_are_refused(tmp_path):
    ca = create_ca(out_dir=tmp_path)

    with pytest.raises(ConfigError):
        issue_server_certificate(ca=ca, addresses=[], out_dir=tmp_path)
    with pytest.raises(ConfigError):
        issue_server_certificate(ca=ca, addresses=["bad name"], out_dir=tmp_path)
    with pytest.raises(ConfigError):
        create_ca(out_dir=tmp_path / "other", days=0)


def test_a_node_key_is_never_overwritten(tmp_path):
    from privacy.pki import generate_node_key

    private, _ = generate_node_key(out_dir=tmp_path, institution="Hungary")
    before = private.read_bytes()
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        generate_node_key(out_dir=tmp_path, institution="Hungary")
    assert private.read_bytes() == before
