"""The LinkState seam: pinned to the Flower it was read from, and in place for simulations.

Every simulation in this suite runs through it (``simulations.runner.simulate``
installs it), so the messages it finds are checked there, on Flower's real engine.
"""

from __future__ import annotations

import pytest
from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

from client.contract.errors import FlowerSeamError
from simulations import fast_linkstate


def test_install_puts_the_per_node_lookup_in_place_once() -> None:
    fast_linkstate.install()
    fast_linkstate.install()

    assert InMemoryLinkState.get_message_ins is fast_linkstate.get_message_ins
    assert InMemoryLinkState.store_message_ins.__wrapped__.__module__ == InMemoryLinkState.__module__


def test_install_fails_loudly_when_flower_rewrites_the_method(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def rewritten(self: object, node_id: int, limit: int | None) -> list[object]:
        return []  # a Flower that no longer walks message_ins_store as 1.41 did

    monkeypatch.setattr(InMemoryLinkState, "get_message_ins", rewritten)

    with pytest.raises(FlowerSeamError, match=r"no longer reads as it did in 1\.41"):
        fast_linkstate.install()
    assert InMemoryLinkState.get_message_ins is rewritten


def test_a_limit_below_one_is_refused_as_flower_does() -> None:
    with pytest.raises(AssertionError, match="limit"):
        fast_linkstate.get_message_ins(object(), 1, 0)
