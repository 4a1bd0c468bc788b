"""A seam into Flower's in-memory LinkState: find a node's messages without checking everyone's.

Flower's simulation engine hands messages to its Ray actors from a thread that,
every 0.1 s, asks the in-memory LinkState for each node's next message
(``flwr.server.superlink.fleet.vce.vce_api.add_messages_to_queue``).
``InMemoryLinkState.get_message_ins`` answers by walking *every* stored message
and running its validity check (expiry, federation membership) on each before
looking at whom it is for: with N nodes and M messages in flight that is N × M
checks a sweep, all under the state's lock and Python's GIL. At a hundred
institutions a SecAgg+ stage has about a hundred messages in flight, and those
sweeps took about a quarter of the coordinator's process, which every
institution's message waits on.

``install()`` replaces that method with one that looks up the node's own
undelivered messages in an index by destination (rebuilt, in one pass, after
any message is stored), then runs Flower's own check
(``_check_stored_messages``) on those only, and returns and marks them as
Flower does; ``store_message_ins`` is Flower's, followed by dropping the index.
A message for another node is checked when that node is asked (every sweep asks
every node), so expired messages are still dropped. The rest of the state is
Flower's. The seam is pinned: ``install`` checks that the method
still has the shape it was read from (Flower 1.41) and raises
``FlowerSeamError`` otherwise (``tests/simulations/test_fast_linkstate.py``).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from client.contract.errors import FlowerSeamError

PINNED_SOURCE = (
    "for msg_id in list(self.message_ins_store.keys()):",
    "self._check_stored_messages({msg_id})",
    "msg_ins.metadata.delivered_at = delivered_at",
)
"""Lines of Flower 1.41's ``InMemoryLinkState.get_message_ins`` the replacement reproduces."""


def install() -> None:
    """Use ``get_message_ins`` below in Flower's ``InMemoryLinkState`` (idempotent)."""
    from flwr.server.superlink.linkstate import in_memory_linkstate

    state_class = in_memory_linkstate.InMemoryLinkState
    current = state_class.get_message_ins
    if current is get_message_ins:
        return
    store = getattr(state_class, "store_message_ins", None)
    if store is None:
        raise FlowerSeamError("Flower's InMemoryLinkState has no store_message_ins")
    try:
        source = inspect.getsource(current)
    except (OSError, TypeError) as exc:
        raise FlowerSeamError(f"cannot read InMemoryLinkState.get_message_ins: {exc}") from exc
    missing = [line for line in PINNED_SOURCE if line not in source]
    if missing or not hasattr(state_class, "_check_stored_messages"):
        raise FlowerSeamError(
            "Flower's InMemoryLinkState.get_message_ins no longer reads as it did in 1.41 "
            f"(missing: {missing or ['_check_stored_messages']}); check the LinkState seam "
            "against this release"
        )
    state_class.get_message_ins = get_message_ins  # type: ignore[method-assign]

    @functools.wraps(store)
    def store_message_ins(self: Any, message: Any) -> Any:
        with self.lock:  # Flower's re-entrant lock: no lookup between the store and the reset
            stored = store(self, message)
            self.fedwarden_by_node = None  # a new message: rebuilt on the next lookup
        return stored

    state_class.store_message_ins = store_message_ins  # type: ignore[method-assign]


def get_message_ins(
    self: Any, node_id: int, limit: int | None, *, run_id: int | None = None
) -> list[Any]:
    """Flower's ``get_message_ins``, checking only ``node_id``'s undelivered messages."""
    from flwr.supercore.date import now

    if limit is not None and limit < 1:
        raise AssertionError("`limit` must be >= 1")
    found: list[Any] = []
    with self.lock:
        by_node: dict[int, list[str]] | None = getattr(self, "fedwarden_by_node", None)
        if by_node is None:
            by_node = {}
            for msg_id, message in self.message_ins_store.items():
                if message.metadata.delivered_at == "":
                    by_node.setdefault(message.metadata.dst_node_id, []).append(msg_id)
            self.fedwarden_by_node = by_node
        for msg_id in by_node.get(node_id, ()):
            message = self.message_ins_store.get(msg_id)
            if (
                message is None
                or message.metadata.dst_node_id != node_id
                or message.metadata.delivered_at != ""
                or (run_id is not None and message.metadata.run_id != run_id)
            ):
                continue  # delivered, deleted or not this run's since the index was built
            self._check_stored_messages({msg_id})
            message = self.message_ins_store.get(msg_id)
            if message is not None:
                found.append(message)
            if limit and len(found) == limit:
                break
    if found:  # most lookups find nothing: a thousand nodes are asked ten times a second
        delivered_at = now().isoformat()
        for message in found:
            message.metadata.delivered_at = delivered_at
    return found
