"""Log redaction: keys, tokens, PEM blocks, URL passwords and sensitive values never reach a line."""

from __future__ import annotations

import logging

import pytest

from privacy.redaction import MASK, Redactor, install_log_redaction

API_KEY = "fw_0123456789ab_S3cr3tS3cr3tS3cr3tS3cr3t-_xyz"
PEM = (
    "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+secretsecretsecret\n"
    "-----END PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"key {API_KEY} used", "S3cr3tS3cr3t"),
        ("Authorization: Bearer abc.def.ghi-token", "abc.def.ghi-token"),
        ("headers={'authorization': 'Basic dXNlcjpwYXNz'}", "dXNlcjpwYXNz"),
        (f"loaded {PEM} ok", "secretsecretsecret"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk (truncated", "b3BlbnNzaC1rZXk"),
        ("url postgresql+psycopg://fw:hunter2pw@db:5432/gov", "hunter2pw"),
        ("FEDWARDEN_KEK=kek-1:QUJDREVGR0hJSktMTU5PUA==", "QUJDREVGR0hJSktMTU5PUA"),
        ("env FEDWARDEN_API_KEY=whatever123", "whatever123"),
    ],
)
def test_each_kind_of_secret_is_masked(text, secret):
    masked = Redactor().mask(text)

    assert secret not in masked and MASK in masked


def test_ordinary_text_is_left_alone():
    text = "round 3: loss 0.41, ε 0.52 at http://127.0.0.1:8080/v1/models (sort_keys=True)"

    assert Redactor().mask(text) == text


def test_registered_literals_are_masked():
    redactor = Redactor()
    redactor.add_literals(["PATIENT-0042", "ab"])  # too short to mask safely: ignored

    assert redactor.mask("row PATIENT-0042 in ab") == f"row {MASK} in ab"


def test_installed_redaction_masks_messages_arguments_and_tracebacks(caplog):
    install_log_redaction()
    install_log_redaction()  # idempotent
    logger = logging.getLogger("fedwarden.test.redaction")

    with caplog.at_level(logging.DEBUG):
        logger.debug("presented %s", API_KEY)
        try:
            raise ValueError(f"bad url postgresql://u:topsecretpw@h/db with {API_KEY}")
        except ValueError:
            logger.exception("failed")

    text = "\n".join(caplog.messages) + caplog.text
    assert "S3cr3tS3cr3t" not in text and "topsecretpw" not in text
    assert "fw_0123456789ab_" in text  # the prefix still names the key
