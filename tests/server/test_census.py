"""Who a node speaks for: the institution its key was registered to, never its own word."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.proto.node_pb2 import NodeInfo
from sqlalchemy import select

from client.contract.wire import CensusReply
from server.census import check_identities, registered_names
from server.store.engine import open_store
from server.store.models import AuditEvent
from server.store.recorder import StoreRecorder


class RegistryGrid:
    """The one Grid call the identity check makes, answered from a list of NodeInfo."""

    def __init__(self, nodes: Iterable[NodeInfo]) -> None:
        self.nodes = list(nodes)

    def get_nodes(self) -> Iterable[NodeInfo]:
        return self.nodes


def reply(institution: str) -> CensusReply:
    return CensusReply(
        institution=institution, num_train=100, num_test=20, schema_json="{}",
        schema_fingerprint="f", budget_epsilon=5.0, budget_delta=1e-5,
        require_secagg=True, device="cpu",
    )  # fmt: skip


def test_a_node_claiming_another_institution_is_refused_and_audited(tmp_path):
    grid = RegistryGrid([
        NodeInfo(node_id=1, name="Ghent", public_key=b"k1"),
        NodeInfo(node_id=2, name="Namur", public_key=b"k2"),
        NodeInfo(node_id=3, name="Leuven", public_key=b"k3"),
    ])  # fmt: skip
    replies = {1: reply("Ghent"), 2: reply("Ghent"), 3: reply("Leuven")}
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        recorder = StoreRecorder(store, run_name="study")

        kept = check_identities(replies, registered_names(grid), observers=[recorder])

        with store.session() as session:
            events = session.scalars(
                select(AuditEvent).where(AuditEvent.action == "node.impersonation")
            ).all()
    finally:
        store.dispose()
    assert sorted(kept) == [1, 3]  # the real Ghent stays; no "names repeat" abort
    assert len(events) == 1
    assert events[0].outcome == "denied"
    assert events[0].target == "node:Namur"
    assert events[0].details["claimed"] == "Ghent" and events[0].details["node_id"] == 2


def test_a_long_name_matches_the_64_characters_flower_keeps():
    name = "Universitair Ziekenhuis " * 4
    grid = RegistryGrid([NodeInfo(node_id=1, name=name[:64], public_key=b"k")])

    assert list(check_identities({1: reply(name)}, registered_names(grid))) == [1]


def test_nodes_registered_without_a_name_are_taken_at_their_word():
    """Flower's simulation engine: random keys, no registrations to hold them to."""
    grid = RegistryGrid([NodeInfo(node_id=1, public_key=b"r1"), NodeInfo(node_id=2)])

    kept = check_identities({1: reply("A"), 2: reply("B")}, registered_names(grid))

    assert sorted(kept) == [1, 2]
