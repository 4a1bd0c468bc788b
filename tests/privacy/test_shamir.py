"""The fast Shamir sharing against PyCryptodome's and Flower's, share for share."""

from __future__ import annotations

import importlib
import os
import random

import pytest
from Crypto.Protocol.SecretSharing import Shamir, _Element
from flwr.common.secure_aggregation.crypto import shamir as flower_shamir
from flwr.server.workflow.secure_aggregation import secaggplus_workflow

from client.contract import shamir_seam
from client.contract.errors import FlowerSeamError
from privacy import shamir

# The package's __init__ re-exports the mod function under the module's name.
secaggplus_mod = importlib.import_module(shamir_seam.SEAMS[0][0])


def test_field_arithmetic_matches_pycryptodome() -> None:
    rng = random.Random(7)
    for _ in range(300):
        a, b = rng.getrandbits(128), rng.getrandbits(128)
        assert shamir.multiply(a, b) == int(_Element(a) * _Element(b))
        assert shamir.multiply(a, shamir.inverse(a)) == 1
    assert shamir.multiply(1 << 127, 2) == 0x87  # x^128 reduces to x^7 + x^2 + x + 1
    with pytest.raises(ValueError, match="no inverse"):
        shamir.inverse(0)


@pytest.mark.parametrize("length", [0, 1, 15, 16, 17, 32, 306])
def test_shares_combine_both_ways_with_flower(length: int) -> None:
    """Ours combine with Flower's function and Flower's with ours, from any threshold subset."""
    rng = random.Random(length)
    secret = os.urandom(length)
    ours = shamir.split(secret, 8, 15)
    theirs = flower_shamir.create_shares(secret, 8, 15)
    assert [len(s) for s in ours] == [len(s) for s in theirs]
    assert [s[:4] for s in ours] == [s[:4] for s in theirs]  # the same indices, little-endian
    for size in (8, 11, 15):
        assert flower_shamir.combine_shares(rng.sample(ours, size)) == secret
        assert shamir.combine(rng.sample(theirs, size)) == secret
        assert shamir.combine(rng.sample(ours, size)) == secret


def test_one_chunk_matches_pycryptodome_split() -> None:
    """A single chunk's shares are points of a polynomial PyCryptodome interpolates."""
    secret = os.urandom(15)  # pads to exactly one 16-byte chunk
    shares = shamir.split(secret, 3, 5)
    chunk = Shamir.combine([(int.from_bytes(s[:4], "little"), s[4:]) for s in shares[1:4]])
    assert chunk == secret + bytes([1])


def test_fewer_shares_than_the_threshold_do_not_recover_the_secret() -> None:
    secret = os.urandom(32)
    shares = shamir.split(secret, 5, 9)
    try:
        recovered: bytes | None = shamir.combine(shares[:4])
    except ValueError:  # the usual outcome: a random polynomial's value is badly padded
        recovered = None
    assert recovered != secret
    assert shamir.combine(shares[:5]) == secret


def test_fresh_randomness_each_split() -> None:
    secret = b"k" * 32
    assert shamir.split(secret, 3, 5)[0] != shamir.split(secret, 3, 5)[0]


@pytest.mark.parametrize(
    ("shares", "message"),
    [
        ([], "no shares"),
        ([b"\x01\x00\x00\x00" + b"x" * 16, b"\x02\x00\x00\x00" + b"x" * 32], "differ in length"),
        ([b"\x01\x00\x00\x00" + b"x" * 16, b"\x01\x00\x00\x00" + b"y" * 16], "duplicate"),
        ([b"\x00\x00\x00\x00" + b"x" * 16], "zero share index"),
    ],
)
def test_malformed_shares_are_refused(shares: list[bytes], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        shamir.combine(shares)


def test_bad_split_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        shamir.split(b"s", 4, 3)
    with pytest.raises(ValueError, match="threshold"):
        shamir.split(b"s", 2, 256)


def test_install_replaces_flowers_functions_where_secagg_calls_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(secaggplus_mod, "create_shares", flower_shamir.create_shares)
    monkeypatch.setattr(secaggplus_workflow, "combine_shares", flower_shamir.combine_shares)
    shamir_seam.install()
    shares = secaggplus_mod.create_shares(b"seed" * 8, 3, 5)
    assert secaggplus_workflow.combine_shares is shamir.combine
    assert flower_shamir.combine_shares(shares[:3]) == b"seed" * 8


def test_install_fails_loudly_when_flower_moves_the_function(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(secaggplus_workflow, "combine_shares")
    with pytest.raises(FlowerSeamError, match="no longer imports combine_shares"):
        shamir_seam.install()
