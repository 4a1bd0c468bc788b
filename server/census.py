"""The census: who the connected nodes are, and which of them share the federation's schema.

Each node answers with a ``CensusReply`` (``client.contract.wire``): its
institution, row counts, schema and budget. Nodes whose schema differs from
the majority's are left out; a malformed reply is logged and left out.

Who a node speaks for is not its word: on a SuperLink with node authentication
each node's key was registered under its institution's name (``flwr supernode
register --name``, see ``server.engine.superlink.push_node_keys``), and the
SuperLink stamps each reply with the authenticated node's id. A reply that
claims another institution than its node's registration is refused, reported
to the observers (``on_impersonation``; the store audits ``node.impersonation``)
and the run goes on without that node.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping

import flwr.compat.common.recorddict_compat as compat
from flwr.app import Message
from flwr.common import Code, GetPropertiesIns
from flwr.common.constant import MessageTypeLegacy
from flwr.server.client_manager import ClientManager
from flwr.serverapp.grid import Grid

from client.contract.schema import TableSchema
from client.contract.wire import CensusReply
from privacy.errors import ConfigError
from server.config import FederationSettings
from server.errors import FederationError
from server.run_events import Institution

logger = logging.getLogger(__name__)

REGISTERED_NAME_LENGTH = 64
"""Flower keeps at most this many characters of a node's registered name."""


def registered_names(grid: Grid) -> dict[int, str]:
    """Node id → the institution its key was registered to, for nodes registered by name.

    Nodes without a registered name are absent: Flower's simulation engine gives
    its nodes random keys and no names, and on fedwarden's SuperLink every key is
    registered under its institution (only the operator can register keys).
    """
    names: dict[int, str] = {}
    for info in grid.get_nodes():
        name = getattr(info, "name", "")
        if name:
            names[int(info.node_id)] = name
    return names


def claims_registered_name(claimed: str, registered: str) -> bool:
    """Whether a census reply's ``claimed`` institution is the node's ``registered`` one."""
    return claimed[:REGISTERED_NAME_LENGTH] == registered


def check_identities(
    replies: Mapping[int, CensusReply],
    registered: Mapping[int, str],
    *,
    observers: Iterable[object] = (),
) -> dict[int, CensusReply]:
    """The replies whose claimed institution is their node's registered one; each other
    reply from a registered node is logged and reported as an impersonation."""
    kept: dict[int, CensusReply] = {}
    for node_id, census in replies.items():
        if node_id not in registered or claims_registered_name(
            census.institution, registered[node_id]
        ):
            kept[node_id] = census
            continue
        logger.error(
            "refusing node %d: it claims to be %s, but its key is registered to %s",
            node_id, census.institution, registered[node_id],
        )  # fmt: skip
        for observer in observers:
            report = getattr(observer, "on_impersonation", None)
            if callable(report):
                report(node_id=node_id, claimed=census.institution, registered=registered[node_id])
    return kept


def take_census(
    grid: Grid,
    manager: ClientManager,
    *,
    settings: FederationSettings,
    observers: Iterable[object] = (),
) -> tuple[dict[int, Institution], TableSchema]:
    """Ask every connected node who it is; keep those that speak for the institution their
    key was registered to and share the majority's schema.

    Raises
    ------
    FederationError
        No node answered, or fewer than ``settings.min_institutions``
        share a schema.
    """
    node_ids = sorted(proxy.node_id for proxy in manager.all().values())
    content = compat.getpropertiesins_to_recorddict(GetPropertiesIns(config={}))
    messages = [
        Message(
            content=content,
            dst_node_id=node_id,
            message_type=MessageTypeLegacy.GET_PROPERTIES,
            group_id="census",
        )
        for node_id in node_ids
    ]
    replies: dict[int, CensusReply] = {}
    for reply in grid.send_and_receive(messages, timeout=settings.round_timeout_s):
        if reply.has_error():
            logger.warning(
                "node %d did not answer the census: %s",
                reply.metadata.src_node_id,
                reply.error.reason,
            )
            continue
        res = compat.recorddict_to_getpropertiesres(reply.content)
        if res.status.code != Code.OK:
            continue
        try:
            replies[reply.metadata.src_node_id] = CensusReply.from_properties(res.properties)
        except ConfigError as exc:
            logger.warning(
                "node %d sent a malformed census reply: %s", reply.metadata.src_node_id, exc
            )
    replies = check_identities(replies, registered_names(grid), observers=observers)
    fingerprints = Counter(r.schema_fingerprint for r in replies.values())
    if not fingerprints:
        raise FederationError("no institution answered the census")
    majority, _ = fingerprints.most_common(1)[0]
    institutions: dict[int, Institution] = {}
    schema: TableSchema | None = None
    for node_id, census in replies.items():
        if census.schema_fingerprint != majority:
            logger.error(
                "leaving out %s: its schema differs from the federation's", census.institution
            )
            continue
        schema = schema or TableSchema.model_validate_json(census.schema_json)
        institutions[node_id] = Institution(
            node_id=node_id,
            name=census.institution,
            num_train=census.num_train,
            num_test=census.num_test,
            budget_epsilon=census.budget_epsilon,
            budget_delta=census.budget_delta,
            require_secagg=census.require_secagg,
        )
    claimed = Counter(i.name for i in institutions.values())
    for name in sorted(n for n, count in claimed.items() if count > 1):
        # Two nodes speak for one institution: at most one is genuine, and which one
        # cannot be told here, so neither takes part; the run goes on without them.
        nodes = sorted(nid for nid, i in institutions.items() if i.name == name)
        logger.error(
            "leaving out nodes %s: each claims to be %s (a misconfigured or impersonating node)",
            nodes,
            name,
        )
        for node_id in nodes:
            del institutions[node_id]
    names = [i.name for i in institutions.values()]
    if len(institutions) < settings.min_institutions or schema is None:
        raise FederationError(
            f"{len(institutions)} institution(s) share a schema; "
            f"{settings.min_institutions} are needed"
        )
    if settings.secagg is None:
        strict = sorted(i.name for i in institutions.values() if i.require_secagg)
        if strict:
            logger.warning(
                "%s require secure aggregation and will refuse rounds run without it",
                ", ".join(strict),
            )
    logger.info("census: %s", ", ".join(sorted(names)))
    return institutions, schema
