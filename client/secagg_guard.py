"""A client mod that checks each SecAgg+ request before Flower's ``secaggplus_mod`` answers it.

Flower's SecAgg+ client trusts the coordinator's unmask request: one that names
a node both as active and as dropped gets back that node's mask seed share and
its key share, and enough such replies unmask its individual update. This mod
sits in front of the secure aggregation mod (``client.app``), remembers what the
node saw of the round (its setup numbers and who shared keys with it) in
``ctxt.state``, and refuses, with ``UnsafeSecureAggregationError``, a request that:

* lists a node as both active and dropped, or this node itself as dropped or
  not active (an unmask request);
* names as active a node that did not share keys with this node in this round,
  or arrives for a round this node did not set up, or after it refused one;
* lists more dropped neighbours than ``num_shares - threshold`` allows;
* sets a reconstruction threshold below a strict majority of the shares;
* has fewer than k institutions taking part: at set-up (the sample), when the
  keys are shared (public keys received), before the masked input leaves
  (neighbours whose shares arrived, this node included) and at unmask (active
  nodes). k is the NODE's own ``min-secure-participants`` node config
  (``MIN_SECURE_PARTICIPANTS`` by default, at least 2), never the coordinator's.

With the overlap check, Flower's one-unmask-per-round rule and a strict-majority
threshold, no coordinator can gather a threshold of both secrets of one node:
each neighbour gives one kind of share, and two majorities of one node's
neighbours cannot be disjoint. A dropped node named by the coordinator that
never sent this node its key shares is an early dropout: this node holds nothing
of it and masked nothing with it, so it is struck from the dropped list before
Flower's mod sees the request (Flower 1.41's ``_unmask`` would raise ``KeyError``
looking up its share) and not counted; the round goes on without it.

A refusal is logged, appended to the node's audit log when its node config
names one (``audit-log``, JSON lines), and wipes Flower's SecAgg+ state for the
round, so no later request can extract the shares the refused one asked for.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from flwr.app import ConfigRecord, Context, Message
from flwr.app.message_type import MessageType
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    Key,
    Stage,
)

from privacy.errors import TooFewParticipantsError, UnsafeSecureAggregationError
from privacy.secagg import MIN_SECURE_PARTICIPANTS, check_min_participants

logger = logging.getLogger(__name__)

GUARD_STATE_KEY = "fedwarden_secagg_guard"
"""Where the guard keeps what it saw of the current round, in the node's ``ctxt.state``."""

MIN_PARTICIPANTS_KEY = "min-secure-participants"
"""Node config key: k, the fewest institutions this node lets its input be summed with."""

AUDIT_LOG_KEY = "audit-log"
"""Node config key: a file the node appends its refusals to (JSON lines)."""

NodeConfigFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def min_secure_participants(node_config: Mapping[str, Any]) -> int:
    """The node's own k (``min-secure-participants``), validated."""
    raw = node_config.get(MIN_PARTICIPANTS_KEY, MIN_SECURE_PARTICIPANTS)
    value = raw
    if isinstance(raw, str):
        with contextlib.suppress(ValueError):
            value = int(raw)
    return check_min_participants(value, source=f"node config {MIN_PARTICIPANTS_KEY!r}")


def secagg_guard_mod_for(node_config: NodeConfigFn | None = None) -> Mod:
    """The guard mod; ``node_config`` completes the node's config as in ``create_client_app``."""

    def secagg_guard_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        if (
            msg.metadata.message_type != MessageType.TRAIN
            or msg.has_error()
            or RECORD_KEY_CONFIGS not in msg.content.config_records
        ):
            return call_next(msg, ctxt)
        config = node_config(ctxt.node_config) if node_config else ctxt.node_config
        k = min_secure_participants(config)
        try:
            _check(msg, ctxt, k=k)
        except UnsafeSecureAggregationError as exc:
            _refuse(msg, ctxt, exc, audit_log=config.get(AUDIT_LOG_KEY))
            raise
        return call_next(msg, ctxt)

    return secagg_guard_mod


secagg_guard_mod = secagg_guard_mod_for()


# ---------------------------------------------------------------------- checks


def _check(msg: Message, ctxt: Context, *, k: int) -> None:
    configs = msg.content.config_records[RECORD_KEY_CONFIGS]
    stage = configs.get(Key.STAGE)
    round_id = msg.metadata.group_id
    nid = msg.metadata.dst_node_id
    if stage == Stage.SETUP:
        ctxt.state.config_records[GUARD_STATE_KEY] = _setup(configs, round_id=round_id, k=k)
        return
    view = ctxt.state.config_records.get(GUARD_STATE_KEY)
    if view is None or view.get("round") != round_id:
        raise UnsafeSecureAggregationError(
            f"SecAgg+ stage {stage!r} for round {round_id!r}, which this node did not set up",
            stage=stage,
            round=round_id,
        )
    if view.get("refused", False):
        raise UnsafeSecureAggregationError(
            f"SecAgg+ round {round_id!r} was already refused; only a new set-up is answered",
            stage=stage,
            round=round_id,
        )
    if stage == Stage.SHARE_KEYS:
        _share_keys(configs, view, nid=nid, k=k)
    elif stage == Stage.COLLECT_MASKED_VECTORS:
        _collect(configs, view, nid=nid, k=k)
    elif stage == Stage.UNMASK:
        _unmask(configs, view, nid=nid, k=k)
    else:
        raise UnsafeSecureAggregationError(f"unknown SecAgg+ stage {stage!r}", stage=stage)
    view["stage"] = stage


def _setup(configs: ConfigRecord, *, round_id: str, k: int) -> ConfigRecord:
    sample = _integer(configs, Key.SAMPLE_NUMBER)
    shares = _integer(configs, Key.SHARE_NUMBER)
    threshold = _integer(configs, Key.THRESHOLD)
    _enough(sample, k, what="institutions sampled for the round")
    if not 2 * threshold > shares or threshold > shares:
        raise UnsafeSecureAggregationError(
            f"reconstruction threshold {threshold} is not a strict majority of {shares} shares",
            threshold=threshold,
            shares=shares,
        )
    return ConfigRecord(
        {
            "round": round_id,
            "stage": Stage.SETUP,
            "share_num": shares,
            "threshold": threshold,
            "refused": False,
        }
    )


def _share_keys(configs: ConfigRecord, view: ConfigRecord, *, nid: int, k: int) -> None:
    try:
        participants = sorted(int(key) for key in configs if key != Key.STAGE)
    except ValueError as exc:
        raise UnsafeSecureAggregationError(f"malformed SecAgg+ key list: {exc}") from exc
    _enough(len(participants), k, what="institutions whose public keys arrived")
    if len(participants) > _integer(view, "share_num"):
        raise UnsafeSecureAggregationError(
            f"{len(participants)} public keys for {_integer(view, 'share_num')} shares",
            keys=len(participants),
        )
    if nid not in participants:
        raise UnsafeSecureAggregationError("the key list leaves this node out", node=nid)
    view["participants"] = participants


def _collect(configs: ConfigRecord, view: ConfigRecord, *, nid: int, k: int) -> None:
    participants = set(_ints(view, "participants"))
    sources = set(_ints(configs, Key.SOURCE_LIST))
    strangers = sources - participants
    if strangers:
        raise UnsafeSecureAggregationError(
            f"key shares from node(s) {sorted(strangers)} that did not share keys in this round",
            nodes=sorted(strangers),
        )
    _enough(len(sources | {nid}), k, what="institutions whose key shares arrived")
    view["sources"] = sorted(sources)


def _unmask(configs: ConfigRecord, view: ConfigRecord, *, nid: int, k: int) -> None:
    participants = set(_ints(view, "participants"))
    active = set(_ints(configs, Key.ACTIVE_NODE_ID_LIST))
    dead = set(_ints(configs, Key.DEAD_NODE_ID_LIST))
    both = active & dead
    if both:
        raise UnsafeSecureAggregationError(
            f"the unmask request lists node(s) {sorted(both)} as both active and dropped: "
            "answering would reveal their mask seed and their key, so their own update",
            nodes=sorted(both),
        )
    if nid in dead or nid not in active:
        raise UnsafeSecureAggregationError(
            "the unmask request lists this node, which is answering, as dropped or not active",
            node=nid,
        )
    strangers = active - participants
    if strangers:
        raise UnsafeSecureAggregationError(
            f"the unmask request names node(s) {sorted(strangers)} as active that did not "
            "share keys with this node in this round",
            nodes=sorted(strangers),
        )
    shared = set(_ints(view, "sources"))
    early = dead - shared
    if early:
        logger.info(
            "unmask: node(s) %s dropped before sending this node key shares; nothing to reveal",
            sorted(early),
        )
        configs[Key.DEAD_NODE_ID_LIST] = sorted(dead & shared)
    dropped = len(dead & shared)
    allowed = _integer(view, "share_num") - _integer(view, "threshold")
    if dropped > allowed:
        raise UnsafeSecureAggregationError(
            f"the unmask request drops {dropped} neighbours; SecAgg+ with "
            f"{_integer(view, 'share_num')} shares and threshold {_integer(view, 'threshold')} "
            f"allows at most {allowed}",
            dropped=dropped,
            allowed=allowed,
        )
    _enough(len(active), k, what="active institutions at unmask")


def _enough(count: int, k: int, *, what: str) -> None:
    if count < k:
        raise TooFewParticipantsError(
            f"only {count} {what}; this node's min-secure-participants is {k}, so the sum "
            "would say too much about each institution",
            participants=count,
            minimum=k,
        )


def _integer(record: ConfigRecord, key: str) -> int:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnsafeSecureAggregationError(f"SecAgg+ value {key!r} is not an integer: {value!r}")
    return value


def _ints(record: ConfigRecord, key: str) -> list[int]:
    value = record.get(key, [])
    if not isinstance(value, list) or any(
        isinstance(v, bool) or not isinstance(v, int) for v in value
    ):
        raise UnsafeSecureAggregationError(f"SecAgg+ list {key!r} is not a list of node ids")
    return cast(list[int], value)


# ---------------------------------------------------------------------- refusals


def _refuse(
    msg: Message, ctxt: Context, exc: UnsafeSecureAggregationError, *, audit_log: Any
) -> None:
    """Log, audit, and forget the round: Flower's SecAgg+ state (the shares) is wiped."""
    round_id = msg.metadata.group_id
    stage = exc.context.get("stage") or _stage_of(msg)
    logger.error("refusing SecAgg+ %s of round %s: %s", stage, round_id, exc)
    ctxt.state.config_records.pop(RECORD_KEY_STATE, None)
    view = ctxt.state.config_records.get(GUARD_STATE_KEY)
    if view is not None:
        view["refused"] = True
    if audit_log:
        event = {
            "time": time.time(),
            "event": "secagg_refused",
            "round": round_id,
            "stage": stage,
            "node_id": msg.metadata.dst_node_id,
            "reason": str(exc),
            "error": type(exc).__name__,
        }
        with Path(str(audit_log)).open("a", encoding="utf-8") as out:
            out.write(json.dumps(event, sort_keys=True) + "\n")


def _stage_of(msg: Message) -> str:
    return str(msg.content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE, "?"))
