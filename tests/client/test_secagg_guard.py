"""A hostile coordinator against the node's SecAgg+ guard, with Flower's real SecAgg+ on both sides.

The coordinator is Flower's ``SecAggPlusWorkflow`` (honest, or a subclass that
lies in one stage); the nodes are real ClientApps with fedwarden's mods in
front of a small NumPy client; the transport is an in-process loopback that
serialises messages as the wire does (``tests.client.secagg_loopback``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.server import LegacyContext
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.supercore.task_identity import TaskIdentity

from client.app import create_client_app
from client.mods import secure_aggregation_mod
from client.secagg_guard import min_secure_participants, secagg_guard_mod
from privacy.errors import ConfigError, TooFewParticipantsError, UnsafeSecureAggregationError
from privacy.secagg import derive_secagg_parameters
from tests.client.secagg_loopback import (
    LoopbackGrid,
    configs_of,
    global_update,
    legacy_context,
    node_app,
    reconstruct,
    update_of,
)

GUARDED = [secagg_guard_mod, secure_aggregation_mod]
UNGUARDED = [secure_aggregation_mod]


@pytest.fixture(autouse=True)
def _coordinator_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    # Messages built outside a running ServerApp need a run and node id.
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 0)


def federation(n: int, mods: list[Any], node_config: dict[str, Any] | None = None) -> LoopbackGrid:
    ids = [1000 + 17 * i for i in range(n)]
    return LoopbackGrid(
        {nid: node_app(mods) for nid in ids}, {nid: dict(node_config or {}) for nid in ids}
    )


def fedwarden_workflow(n: int, cls: type[SecAggPlusWorkflow] = SecAggPlusWorkflow, **extra: Any):
    params = derive_secagg_parameters(num_institutions=n, clipping_range=8.0, max_weight=10)
    return cls(**params.workflow_arguments(), **extra), params  # type: ignore[arg-type]


class ForgedUnmask(SecAggPlusWorkflow):
    """Runs SecAgg+ honestly up to the unmask stage, then sends ``forge``'s lists instead."""

    def __init__(
        self, forge: Callable[[int, set[int], set[int]], tuple[list[int], list[int]]], **kw: Any
    ):
        super().__init__(**kw)
        self.forge = forge

    def unmask_stage(self, grid, context: LegacyContext, state: WorkflowState) -> bool:  # type: ignore[override]
        active = state.active_node_ids

        def make(nid: int) -> Message:
            neighbours = state.nid_to_neighbours[nid]
            active_list, dead_list = self.forge(nid, neighbours & active, neighbours - active)
            record = ConfigRecord(
                {
                    Key.STAGE: Stage.UNMASK,
                    Key.ACTIVE_NODE_ID_LIST: active_list,
                    Key.DEAD_NODE_ID_LIST: dead_list,
                }
            )
            return Message(
                content=RecordDict({RECORD_KEY_CONFIGS: record}),
                dst_node_id=nid,
                message_type=MessageType.TRAIN,
                group_id="1",
            )

        grid.send_and_receive([make(nid) for nid in sorted(active)], timeout=self.timeout)
        return False


def victim_of(grid: LoopbackGrid) -> int:
    return sorted(grid.apps)[1]


def unmask_replies(grid: LoopbackGrid) -> list[Message]:
    asked = {
        m.metadata.message_id
        for m in grid.sent
        if m.content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE) == Stage.UNMASK
    }
    return [r for r in grid.received if r.metadata.reply_to_message_id in asked]


# ---------------------------------------------------------------- an honest round


def test_an_honest_secagg_round_sums_the_updates_with_the_guard_on():
    grid = federation(4, GUARDED)
    context = legacy_context(grid)
    workflow, _ = fedwarden_workflow(4)

    workflow(grid, context)

    expected = [np.mean([update_of(nid)[i] for nid in grid.apps], axis=0) for i in range(2)]
    for got, want in zip(global_update(context), expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert not any(reply.has_error() for reply in grid.received)


def test_the_node_app_puts_the_guard_in_front_of_secure_aggregation():
    mods = create_client_app()._mods

    assert [m.__name__ for m in mods[:2]] == ["secagg_guard_mod", "secure_aggregation_mod"]


# ---------------------------------------------------------------- forged unmask requests


def _victim_in_both(
    victim: int,
) -> Callable[[int, set[int], set[int]], tuple[list[int], list[int]]]:
    def forge(nid: int, active: set[int], dead: set[int]) -> tuple[list[int], list[int]]:
        return sorted(active), sorted(dead | ({victim} & active))

    return forge


def test_without_the_guard_a_victim_in_both_lists_is_unmasked():
    """The attack is real: Flower's mod alone hands over both of the victim's secrets."""
    grid = federation(4, UNGUARDED)
    victim = victim_of(grid)
    workflow, params = fedwarden_workflow(4, ForgedUnmask, forge=_victim_in_both(victim))

    workflow(grid, legacy_context(grid))
    recovered = reconstruct(
        grid,
        victim=victim,
        threshold=params.reconstruction_threshold,
        clipping_range=params.clipping_range,
        target_range=params.quantization_range,
        mod_range=params.modulus_range,
    )

    assert recovered is not None
    for got, want in zip(recovered, update_of(victim), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_a_victim_in_both_lists_gets_a_refusal_an_audit_event_and_nothing_else(tmp_path):
    audit = tmp_path / "audit.jsonl"
    grid = federation(4, GUARDED, {"audit-log": str(audit)})
    victim = victim_of(grid)
    workflow, params = fedwarden_workflow(4, ForgedUnmask, forge=_victim_in_both(victim))

    workflow(grid, legacy_context(grid))

    replies = unmask_replies(grid)
    assert len(replies) == 4 and all(r.has_error() for r in replies)
    assert all("both active and dropped" in r.error.reason for r in replies)
    assert not any(
        RECORD_KEY_CONFIGS in r.content.config_records for r in replies if not r.has_error()
    )
    assert (
        reconstruct(
            grid,
            victim=victim,
            threshold=params.reconstruction_threshold,
            clipping_range=params.clipping_range,
            target_range=params.quantization_range,
            mod_range=params.modulus_range,
        )
        is None
    )
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    assert {e["event"] for e in events} == {"secagg_refused"} and len(events) == 4
    assert all(e["stage"] == Stage.UNMASK and e["round"] == "1" for e in events)


def test_a_refused_round_keeps_no_secret_for_a_second_request():
    grid = federation(4, GUARDED)
    victim = victim_of(grid)
    workflow, _ = fedwarden_workflow(4, ForgedUnmask, forge=_victim_in_both(victim))
    workflow(grid, legacy_context(grid))
    nid = sorted(grid.apps)[0]
    honest = Message(
        content=RecordDict(
            {
                RECORD_KEY_CONFIGS: ConfigRecord(
                    {
                        Key.STAGE: Stage.UNMASK,
                        Key.ACTIVE_NODE_ID_LIST: sorted(grid.apps),
                        Key.DEAD_NODE_ID_LIST: [],
                    }
                )
            }
        ),
        dst_node_id=nid,
        message_type=MessageType.TRAIN,
        group_id="1",
    )

    (reply,) = grid.send_and_receive([honest])

    assert reply.has_error() and "already refused" in reply.error.reason


@pytest.mark.parametrize(
    ("forge", "phrase"),
    [
        (lambda nid, active, dead: (sorted(active | {424242}), sorted(dead)), "did not share keys"),
        (lambda nid, active, dead: (sorted(active - {nid}), sorted(dead | {nid})), "as dropped"),
        # Repeating this node pads the active list past Flower's own threshold check.
        (
            lambda nid, active, dead: ([nid, nid, nid], sorted(active - {nid})),
            "allows at most",
        ),
    ],
    ids=["unknown-node", "answering-node-dropped", "too-many-dropped"],
)
def test_an_inconsistent_unmask_request_is_refused_by_every_node(forge, phrase):
    grid = federation(5, GUARDED)
    workflow, _ = fedwarden_workflow(5, ForgedUnmask, forge=forge)

    workflow(grid, legacy_context(grid))

    replies = unmask_replies(grid)
    assert len(replies) == 5
    assert all(r.has_error() and phrase in r.error.reason for r in replies)
    assert all("UnsafeSecureAggregationError" in r.error.reason for r in replies)


def test_without_the_guard_too_many_dropped_nodes_hand_over_their_keys():
    """Flower counts the repeated active entries and answers: the guard is what refuses."""
    grid = federation(5, UNGUARDED)
    forge = lambda nid, active, dead: ([nid, nid, nid], sorted(active - {nid}))  # noqa: E731
    workflow, _ = fedwarden_workflow(5, ForgedUnmask, forge=forge)

    workflow(grid, legacy_context(grid))

    replies = unmask_replies(grid)
    assert replies and not any(r.has_error() for r in replies)


# ---------------------------------------------------------------- too few institutions


def test_a_secure_round_of_two_is_refused_at_set_up():
    grid = federation(4, GUARDED)
    context = legacy_context(grid, sample=2)
    workflow = SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=1.0)

    workflow(grid, context)

    replies = grid.received
    assert len(replies) == 2 and all(r.has_error() for r in replies)
    assert all("TooFewParticipantsError" in r.error.reason for r in replies)
    assert all(np.all(a == 0) for a in global_update(context))  # nothing was summed


class Pairs(SecAggPlusWorkflow):
    """Says all are sampled, then gives each node one neighbour: sums of two."""

    def share_keys_stage(self, grid, context, state: WorkflowState) -> bool:  # type: ignore[override]
        ids = sorted(state.active_node_ids)
        state.nid_to_neighbours = {nid: {nid, ids[(i + 1) % len(ids)]} for i, nid in enumerate(ids)}
        return super().share_keys_stage(grid, context, state)


@pytest.mark.parametrize(("mods", "refused"), [(UNGUARDED, False), (GUARDED, True)])
def test_a_coordinator_that_pairs_nodes_off_is_refused_at_key_sharing(mods, refused):
    grid = federation(3, mods)
    workflow, _ = fedwarden_workflow(3, Pairs)

    workflow(grid, legacy_context(grid))

    share_replies = grid.received[3:6]
    assert all(r.has_error() for r in share_replies) == refused
    if refused:
        assert all("public keys arrived" in r.error.reason for r in share_replies)


def test_k_is_the_nodes_own_setting():
    grid = federation(3, GUARDED, {"min-secure-participants": 4})
    workflow, _ = fedwarden_workflow(3)

    workflow(grid, legacy_context(grid))

    assert len(grid.received) == 3 and all(
        "TooFewParticipantsError" in r.error.reason for r in grid.received
    )


@pytest.mark.parametrize("value", [1, 0, "two", 2.5, True])
def test_a_node_k_below_two_or_not_an_integer_is_a_config_error(value):
    with pytest.raises(ConfigError, match="min-secure-participants"):
        min_secure_participants({"min-secure-participants": value})


def test_the_guard_errors_are_privacy_errors_with_exit_code_3():
    assert issubclass(TooFewParticipantsError, UnsafeSecureAggregationError)
    assert UnsafeSecureAggregationError.exit_code == 3
    assert min_secure_participants({}) == 3
    assert min_secure_participants({"min-secure-participants": "2"}) == 2


# ---------------------------------------------------------------- early dropouts


def dies_at(stage: str, victim: int) -> Any:
    """A mod that kills ``victim`` when the coordinator asks it for ``stage``."""

    def mod(msg: Message, ctxt: Any, call_next: Any) -> Message:
        configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
        if msg.metadata.dst_node_id == victim and configs and configs.get(Key.STAGE) == stage:
            raise ConnectionError(f"node {victim} lost power at {stage}")
        return call_next(msg, ctxt)

    return mod


def early_dropout_federation(stage: str) -> tuple[LoopbackGrid, int]:
    ids = [1000 + 17 * i for i in range(4)]
    victim = ids[2]
    apps = {nid: node_app([dies_at(stage, victim), *GUARDED]) for nid in ids}
    return LoopbackGrid(apps, {nid: {} for nid in ids}), victim


@pytest.mark.parametrize("stage", [Stage.SETUP, Stage.SHARE_KEYS, Stage.COLLECT_MASKED_VECTORS])
def test_a_node_lost_at_any_stage_costs_only_its_own_update(stage):
    from server.workflows import DropoutTolerantSecAggPlus

    grid, victim = early_dropout_federation(stage)
    context = legacy_context(grid)
    workflow, _ = fedwarden_workflow(4, DropoutTolerantSecAggPlus)

    workflow(grid, context)

    survivors = [nid for nid in grid.apps if nid != victim]
    expected = [np.mean([update_of(nid)[i] for nid in survivors], axis=0) for i in range(2)]
    for got, want in zip(global_update(context), expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert [r for r in unmask_replies(grid) if r.has_error()] == []


def test_flowers_own_workflow_loses_the_round_to_a_node_lost_before_it_shared_keys():
    """What DropoutTolerantSecAggPlus fixes: Flower 1.41 finds no shares of the lost node."""
    grid, _ = early_dropout_federation(Stage.SHARE_KEYS)
    context = legacy_context(grid)
    workflow, _ = fedwarden_workflow(4)

    workflow(grid, context)

    assert all(np.all(a == 0) for a in global_update(context))  # nothing was aggregated


@pytest.mark.parametrize(("mods", "survives"), [(UNGUARDED, False), (GUARDED, True)])
def test_the_guard_strikes_an_early_dropout_from_the_unmask_request(mods, survives):
    """Flower's workflow lists the lost node as dropped; Flower's mod alone raises KeyError."""
    ids = [1000 + 17 * i for i in range(4)]
    victim = ids[2]
    grid = LoopbackGrid(
        {nid: node_app([dies_at(Stage.SHARE_KEYS, victim), *mods]) for nid in ids},
        {nid: {} for nid in ids},
    )
    workflow, _ = fedwarden_workflow(4)

    workflow(grid, legacy_context(grid))

    replies = unmask_replies(grid)
    assert len(replies) == 3
    assert all(victim in configs_of(m)[Key.DEAD_NODE_ID_LIST] for m in grid.sent[-3:])
    if survives:
        assert not any(r.has_error() for r in replies)
        assert all(victim not in configs_of(r)[Key.NODE_ID_LIST] for r in replies)
    else:
        assert all(r.has_error() and "KeyError" in r.error.reason for r in replies)


@pytest.mark.parametrize("stage", [Stage.SETUP, Stage.SHARE_KEYS, Stage.COLLECT_MASKED_VECTORS])
def test_a_node_lost_at_a_stage_is_named_with_its_reason_among_the_failures(stage):
    from server.errors import NodeFailedError
    from server.workflows import DropoutTolerantSecAggPlus

    grid, victim = early_dropout_federation(stage)
    context = legacy_context(grid)
    seen: list[BaseException] = []
    aggregate = context.strategy.aggregate_fit

    def recording(server_round, results, failures):
        seen.extend(failures)
        return aggregate(server_round, results, failures)

    context.strategy.aggregate_fit = recording  # type: ignore[method-assign]
    workflow, _ = fedwarden_workflow(4, DropoutTolerantSecAggPlus)

    workflow(grid, context)

    assert seen  # (Flower lists a node lost while collecting vectors twice)
    for failure in seen:
        assert isinstance(failure, NodeFailedError) and failure.node_id == victim
        assert f"node {victim} lost power at {stage}" in failure.reason
