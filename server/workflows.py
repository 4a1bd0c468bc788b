"""One round's message flow: in the clear, or through Flower's SecAgg+.

Both take ``(grid, LegacyContext)`` like Flower's own workflows and leave the new
global weights in the context's state. The plain one mirrors Flower's
``default_fit_workflow`` and adds what a consortium needs: a reply timeout, and
failures that name the node. (Evaluation is not a workflow of its own: it is a
secure sum, ``Federation._evaluate``.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import Code, Parameters, parameters_to_ndarrays
from flwr.server import LegacyContext
from flwr.server.client_proxy import ClientProxy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp.grid import Grid

from client.contract import shamir_seam
from privacy.secagg import SecAggParameters
from server.errors import NodeFailedError

logger = logging.getLogger(__name__)

Workflow = Callable[[Grid, LegacyContext], None]


def current_round(context: LegacyContext) -> int:
    return cast(int, context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND])


def _exchange(
    grid: Grid,
    messages: list[Message],
    timeout_s: float | None,
) -> tuple[list[Message], list[NodeFailedError]]:
    """Send ``messages``; return the replies and a failure for each node that gave none."""
    replies = list(grid.send_and_receive(messages, timeout=timeout_s))
    answered = {m.metadata.src_node_id for m in replies}
    failures = [
        NodeFailedError(m.metadata.dst_node_id, f"no reply within {timeout_s:g} s")
        for m in messages
        if m.metadata.dst_node_id not in answered and timeout_s is not None
    ]
    ok = []
    for reply in replies:
        if reply.has_error():
            reason = reply.error.reason or f"error code {reply.error.code}"
            failures.append(NodeFailedError(reply.metadata.src_node_id, reason))
        else:
            ok.append(reply)
    return ok, failures


def plain_fit_workflow(*, timeout_s: float | None) -> Workflow:
    """Train one round with updates in the clear (``--no-secagg``)."""

    def workflow(grid: Grid, context: LegacyContext) -> None:
        server_round, instructions = _configure(context, context.strategy.configure_fit)
        if not instructions:
            logger.info("round %d: no institution selected for training", server_round)
            return
        results, failures = _round_trip(grid, instructions, _FIT, server_round, timeout_s)
        aggregated, metrics = context.strategy.aggregate_fit(server_round, results, failures)
        if aggregated is not None:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
                aggregated, True
            )
            context.history.add_metrics_distributed_fit(server_round=server_round, metrics=metrics)

    return workflow


class DropoutTolerantSecAggPlus(SecAggPlusWorkflow):
    """Flower's ``SecAggPlusWorkflow``, surviving a node lost before it shared its keys.

    Flower 1.41 keeps every node sampled at set-up as one whose masks must be
    removed at unmask: a node that dropped before sending its key shares is then
    listed as dropped to its neighbours (who hold no share of it: ``KeyError``)
    and needs shares nobody has ("Not enough shares"), so the round is lost.
    No one masked anything with such a node, so once the keys are shared it is
    forgotten: the round goes on over the nodes that shared (and a node lost
    later is unmasked as Flower does), costing only the lost node's update.
    """

    def setup_stage(  # type: ignore[override]
        self, grid: Grid, context: LegacyContext, state: WorkflowState
    ) -> bool:
        return _naming_failures(super().setup_stage, grid, context, state)

    def collect_masked_vectors_stage(  # type: ignore[override]
        self, grid: Grid, context: LegacyContext, state: WorkflowState
    ) -> bool:
        return _naming_failures(super().collect_masked_vectors_stage, grid, context, state)

    def share_keys_stage(  # type: ignore[override]
        self, grid: Grid, context: LegacyContext, state: WorkflowState
    ) -> bool:
        _naming_failures(super().share_keys_stage, grid, context, state)
        shared = set(state.active_node_ids)
        early = state.sampled_node_ids - shared
        if early:
            logger.warning(
                "round %d: node(s) %s dropped before sharing their keys; the secure sum "
                "goes on without them",
                current_round(context),
                sorted(early),
            )
            state.sampled_node_ids = shared
            state.nid_to_neighbours = {
                nid: neighbours & shared
                for nid, neighbours in state.nid_to_neighbours.items()
                if nid in shared
            }
        return self._check_threshold(state)


class _ErrorNotingGrid:
    """A grid that remembers which node sent each error reply (Flower's SecAgg+ workflow
    keeps only the error, as a bare ``Exception``, among the round's failures)."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid
        self.senders: dict[int, int] = {}
        """``id(reply.error)`` → the node that sent it."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        for reply in replies:
            if reply.has_error():
                self.senders[id(reply.error)] = reply.metadata.src_node_id
        return replies


_REASON_MAX = 1000
"""A node's own reason is its text, kept on the round's record: bounded."""


def _naming_failures(
    stage: Callable[[Grid, LegacyContext, WorkflowState], bool],
    grid: Grid,
    context: LegacyContext,
    state: WorkflowState,
) -> bool:
    """Run one SecAgg+ stage; the failures it adds name their node (``NodeFailedError``,
    with the node's own reason: a refusal says why), so the round records who and why."""
    noting = _ErrorNotingGrid(grid)
    first = len(state.failures)
    done = stage(cast(Grid, noting), context, state)
    named: list[Exception] = []
    for failure in state.failures[first:]:
        error = failure.args[0] if isinstance(failure, Exception) and failure.args else None
        node = noting.senders.get(id(error)) if error is not None else None
        if node is None:
            named.append(failure)
        else:
            reason = getattr(error, "reason", "") or f"error code {getattr(error, 'code', '?')}"
            named.append(NodeFailedError(node, str(reason)[:_REASON_MAX]))
    state.failures[first:] = named
    return done


def secure_fit_workflow(parameters: SecAggParameters) -> Workflow:
    """Train one round through Flower's SecAgg+ (``DropoutTolerantSecAggPlus``), recombining
    shares with ``privacy.shamir`` (Flower's combination, faster)."""
    shamir_seam.install()
    secagg = DropoutTolerantSecAggPlus(**parameters.workflow_arguments())  # type: ignore[arg-type]

    def workflow(grid: Grid, context: LegacyContext) -> None:
        try:
            secagg(grid, context)
        except ZeroDivisionError:
            # Every participant sent weight 0 (all refused): there is no sum to unmask.
            logger.warning(
                "round %d: no institution contributed to the secure sum", current_round(context)
            )

    return workflow


def fresh_context(context: Context) -> Context:
    """A copy of ``context`` with its own state, so phases do not share records."""
    return Context(
        run_id=context.run_id,
        node_id=context.node_id,
        node_config=context.node_config,
        state=RecordDict(),
        run_config=context.run_config,
    )


def global_weights(context: LegacyContext) -> list[np.ndarray]:
    """The global weights a workflow left in the context's state."""
    return parameters_to_ndarrays(_parameters(context))


def _configure(context: LegacyContext, configure: Callable[..., Any]) -> tuple[int, list[Any]]:
    """The current round, and the strategy's instructions for it."""
    server_round = current_round(context)
    instructions = configure(
        server_round=server_round,
        parameters=_parameters(context),
        client_manager=context.client_manager,
    )
    return server_round, list(instructions)


def _parameters(context: LegacyContext) -> Parameters:
    return compat.arrayrecord_to_parameters(
        context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True
    )


@dataclass(frozen=True)
class _Codec:
    """How one kind of legacy instruction and its reply travel as Flower messages."""

    message_type: str
    encode: Callable[[Any, bool], RecordDict]
    decode: Callable[[RecordDict], Any]


_FIT = _Codec(
    MessageType.TRAIN,
    compat.fitins_to_recorddict,
    lambda content: compat.recorddict_to_fitres(content, keep_input=False),
)


def _round_trip(
    grid: Grid,
    instructions: Sequence[tuple[ClientProxy, Any]],
    codec: _Codec,
    server_round: int,
    timeout_s: float | None,
) -> tuple[list[tuple[ClientProxy, Any]], list[tuple[ClientProxy, Any] | BaseException]]:
    """Send each node its instruction; the OK replies, and a named failure for each other."""
    proxies = {proxy.node_id: proxy for proxy, _ in instructions}
    messages = [
        Message(
            content=codec.encode(ins, True),
            dst_node_id=proxy.node_id,
            message_type=codec.message_type,
            group_id=str(server_round),
        )
        for proxy, ins in instructions
    ]
    replies, node_failures = _exchange(grid, messages, timeout_s)
    results: list[tuple[ClientProxy, Any]] = []
    failures: list[tuple[ClientProxy, Any] | BaseException] = list(node_failures)
    for reply in replies:
        res = codec.decode(reply.content)
        proxy = proxies[reply.metadata.src_node_id]
        if res.status.code == Code.OK:
            results.append((proxy, res))
        else:
            failures.append(NodeFailedError(proxy.node_id, res.status.message))
    return results, failures
