"""The census reply both sides read: what a node says, and how a bad reply fails."""

from __future__ import annotations

import pytest

from client.contract.wire import CensusReply
from privacy.errors import ConfigError

REPLY = CensusReply(
    institution="Hungary",
    num_train=195,
    num_test=98,
    schema_json='{"name": "heart"}',
    schema_fingerprint="abc123",
    budget_epsilon=1.0,
    budget_delta=1e-5,
    require_secagg=True,
    device="cpu",
)


def test_a_census_reply_survives_the_wire():
    properties = REPLY.to_properties()

    assert all(key.startswith("fw.") for key in properties)
    assert CensusReply.from_properties(properties) == REPLY


def test_a_reply_missing_a_key_names_it():
    properties = REPLY.to_properties()
    del properties["fw.num-train"]

    with pytest.raises(ConfigError, match=r"census reply lacks 'fw\.num-train'"):
        CensusReply.from_properties(properties)


def test_a_reply_with_a_malformed_value_is_refused():
    properties = {**REPLY.to_properties(), "fw.num-test": "many"}

    with pytest.raises(ConfigError, match="census reply is malformed"):
        CensusReply.from_properties(properties)
