"""The consortium's keys and certificates, made with ``cryptography``.

* a consortium CA (ECDSA P-384, self-signed), kept by the coordinator's operator;
* the SuperLink's TLS certificate, signed by the CA, naming every address the
  coordinator serves on (IP addresses and DNS names as subject alternative names);
* one node key pair per institution (ECDSA P-384 in OpenSSH format: what Flower's
  SuperNode authentication takes); its public key is registered with the
  coordinator, its private key never leaves the institution.

Private keys are written with mode 0600 and never printed or logged; with a
keyring (encryption at rest on) they are sealed under its active KEK, and
``privacy.sealed_files.materialized`` hands Flower a short-lived plaintext copy.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from privacy.envelope import Keyring
from privacy.errors import ConfigError
from privacy.sealed_files import read_private_file, write_file

NODE_KEY_TYPES = ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")


@dataclass(frozen=True)
class IssuedFiles:
    certificate: Path
    private_key: Path


def _write_private(path: Path, data: bytes, *, keyring: Keyring | None) -> None:
    write_file(path, data, keyring=keyring, private=True)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def create_ca(
    *,
    out_dir: Path,
    name: str = "fedwarden consortium CA",
    days: int = 3650,
    keyring: Keyring | None = None,
) -> IssuedFiles:
    """A self-signed CA: ``ca.crt`` (hand it to every institution) and ``ca.key`` (keep it)."""
    if days < 1:
        raise ConfigError(f"a certificate must last at least a day, got {days}")
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    files = IssuedFiles(certificate=out_dir / "ca.crt", private_key=out_dir / "ca.key")
    out_dir.mkdir(parents=True, exist_ok=True)
    files.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    _write_private(files.private_key, _pem_key(key), keyring=keyring)
    return files


def issue_server_certificate(
    *,
    ca: IssuedFiles,
    addresses: list[str],
    out_dir: Path,
    days: int = 825,
    keyring: Keyring | None = None,
) -> IssuedFiles:
    """The SuperLink's TLS certificate for ``addresses`` (IPs or DNS names), signed by ``ca``."""
    if not addresses:
        raise ConfigError("the server certificate needs at least one address it serves on")
    if days < 1:
        raise ConfigError(f"a certificate must last at least a day, got {days}")
    ca_certificate = x509.load_pem_x509_certificate(ca.certificate.read_bytes())
    ca_pem = read_private_file(ca.private_key, keyring=keyring, what="the CA key")
    ca_key = serialization.load_pem_private_key(ca_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigError("the CA key is not an elliptic-curve key made by `fedwarden pki init`")
    names: list[x509.GeneralName] = []
    for address in addresses:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            if not address or any(c.isspace() for c in address):
                raise ConfigError(f"not an IP address or DNS name: {address!r}") from None
            names.append(x509.DNSName(address))
    key = ec.generate_private_key(ec.SECP384R1())
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, addresses[0])]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    files = IssuedFiles(certificate=out_dir / "server.crt", private_key=out_dir / "server.key")
    files.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    _write_private(files.private_key, _pem_key(key), keyring=keyring)
    return files


def generate_node_key(
    *, out_dir: Path, institution: str, keyring: Keyring | None = None
) -> tuple[Path, str]:
    """An institution's node key pair (OpenSSH ECDSA P-384); returns the private key's path
    and the public key line (``ecdsa-sha2-nistp384 AAAA... fedwarden:<institution>``)."""
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in institution) or "node"
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    line = f"{public} fedwarden:{stem}"
    private_path = out_dir / f"{stem}.key"
    if private_path.exists():
        # It may be registered already: replacing it would lock the node out.
        raise ConfigError(f"{private_path} exists; refusing to overwrite a node's key")
    _write_private(private_path, private, keyring=keyring)
    (out_dir / f"{stem}.pub").write_text(line + "\n")
    return private_path, line


def check_node_public_key(line: str) -> str:
    """The key's type and base64 body if ``line`` is a node public key Flower accepts."""
    parts = line.strip().split()
    if len(parts) < 2 or parts[0] not in NODE_KEY_TYPES:
        raise ConfigError(
            "a node public key is one OpenSSH line of an ECDSA key "
            f"({', '.join(NODE_KEY_TYPES)}), as `fedwarden pki node` writes"
        )
    try:
        serialization.load_ssh_public_key(f"{parts[0]} {parts[1]}".encode())
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"the node public key is malformed: {exc}") from None
    return f"{parts[0]} {parts[1]}"


def fingerprint(line: str) -> str:
    """``SHA256:<base64>`` of the key, as ``ssh-keygen -lf`` prints it."""
    body = check_node_public_key(line).split()[1]
    digest = hashlib.sha256(base64.b64decode(body)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def openssh_from_pem(pem: bytes) -> str:
    """The OpenSSH line of a PEM (SubjectPublicKeyInfo) public key, as Flower logs them."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError("a node key is an elliptic-curve key")
    return key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
