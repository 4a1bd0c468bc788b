"""Envelope encryption: a data key per artifact, wrapped by a KEK, authenticated both ways."""

from __future__ import annotations

import pytest

from privacy.envelope import Envelope, Keyring, LocalKeyEncryptionKey, is_sealed, open_if_sealed
from privacy.errors import DecryptionError, KeyUnavailableError

PLAINTEXT = b"weights \x00\x01\x02 " * 100


def ring(*keks: LocalKeyEncryptionKey, active: str | None = None) -> Keyring:
    return Keyring(keks, active=active or keks[0].kek_id)


def test_sealed_bytes_open_back_and_hide_the_plaintext():
    keyring = ring(LocalKeyEncryptionKey.generate("kek-a"))

    sealed = keyring.seal(PLAINTEXT)

    assert is_sealed(sealed) and b"weights" not in sealed
    assert Envelope.parse(sealed).kek_id == "kek-a"
    assert keyring.open(sealed) == PLAINTEXT


def test_every_artifact_gets_its_own_data_key():
    keyring = ring(LocalKeyEncryptionKey.generate("kek-a"))

    first, second = Envelope.parse(keyring.seal(PLAINTEXT)), Envelope.parse(keyring.seal(PLAINTEXT))

    assert first.wrapped_key != second.wrapped_key and first.ciphertext != second.ciphertext


def test_the_wrong_kek_fails_clearly():
    sealed = ring(LocalKeyEncryptionKey.generate("kek-a")).seal(PLAINTEXT)
    impostor = ring(LocalKeyEncryptionKey.generate("kek-a"))  # same id, other key material

    with pytest.raises(DecryptionError, match="does not open under KEK 'kek-a'"):
        impostor.open(sealed)


def test_a_missing_kek_is_named():
    sealed = ring(LocalKeyEncryptionKey.generate("kek-a")).seal(PLAINTEXT)

    with pytest.raises(KeyUnavailableError, match=r"sealed with KEK 'kek-a'.*have: kek-b"):
        ring(LocalKeyEncryptionKey.generate("kek-b")).open(sealed)


def test_altered_ciphertext_is_refused():
    keyring = ring(LocalKeyEncryptionKey.generate("kek-a"))
    sealed = bytearray(keyring.seal(PLAINTEXT))
    sealed[-20] ^= 1

    with pytest.raises(DecryptionError, match="altered"):
        keyring.open(bytes(sealed))


def test_a_truncated_envelope_is_refused():
    keyring = ring(LocalKeyEncryptionKey.generate("kek-a"))

    with pytest.raises(DecryptionError, match=r"truncated|malformed"):
        keyring.open(keyring.seal(PLAINTEXT)[:30])


def test_rewrap_changes_only_the_wrapped_key():
    old, new = LocalKeyEncryptionKey.generate("kek-old"), LocalKeyEncryptionKey.generate("kek-new")
    sealed = ring(old).seal(PLAINTEXT)
    rotated = ring(old, new, active="kek-new")

    rewrapped = rotated.rewrap(sealed)

    before, after = Envelope.parse(sealed), Envelope.parse(rewrapped)
    assert after.kek_id == "kek-new" and after.ciphertext == before.ciphertext
    assert after.nonce == before.nonce and after.wrapped_key != before.wrapped_key
    assert ring(new).open(rewrapped) == PLAINTEXT  # the old KEK is no longer needed


def test_plaintext_passes_and_sealed_needs_a_keyring():
    sealed = ring(LocalKeyEncryptionKey.generate("kek-a")).seal(PLAINTEXT)

    assert open_if_sealed(None, PLAINTEXT, what="x") == PLAINTEXT
    with pytest.raises(KeyUnavailableError, match=r"checkpoint .* is encrypted.*FEDWARDEN_KEYRING"):
        open_if_sealed(None, sealed, what="checkpoint 3")


def test_kek_repr_never_shows_the_key():
    kek = LocalKeyEncryptionKey("kek-a", b"\x07" * 32)

    assert "\\x07" not in repr(kek) and "kek-a" in repr(kek)
