"""Flower client mods that sit between the network and the institution's client.

``secure_aggregation_mod`` runs SecAgg+ (Flower's ``secaggplus_mod``) when the
coordinator asks for it, and, where the institution requires it, refuses to
send a training reply in the clear. ``update_guard_mod`` checks every outgoing
update (finite, of the model's shape) before it is masked or sent: a bad one is
dropped from the round with its reason, never aggregated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common import parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat

from client.contract.wire import TASK_KEY, TASK_PROFILE, TASK_SUMMARY
from client.node import NodeSettings
from privacy.errors import SecureAggregationRequiredError, UpdateRejectedError
from privacy.updates import validate_update

logger = logging.getLogger(__name__)

_FITINS_PARAMETERS = "fitins.parameters"


def secure_aggregation_mod_for(
    node_config: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
) -> Mod:
    """A mod that routes training messages through SecAgg+ when the coordinator runs it.

    ``node_config`` completes the node's config, as in ``create_client_app``;
    ``require-secagg`` is read from the result.
    """

    def secure_aggregation_mod(
        msg: Message, ctxt: Context, call_next: ClientAppCallable
    ) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, ctxt)
        if RECORD_KEY_CONFIGS in msg.content.config_records:
            return secaggplus_mod(msg, ctxt, call_next)
        config = node_config(ctxt.node_config) if node_config else ctxt.node_config
        if NodeSettings.from_node_config(config).require_secagg:
            logger.error("refusing a training round without secure aggregation")
            raise SecureAggregationRequiredError(
                "this institution requires secure aggregation and will not send its update "
                "in the clear"
            )
        return call_next(msg, ctxt)

    return secure_aggregation_mod


secure_aggregation_mod = secure_aggregation_mod_for()


def update_guard_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Check the update in a training reply before it leaves; raise if it is malformed."""
    reply = call_next(msg, ctxt)
    if (
        msg.metadata.message_type != MessageType.TRAIN
        or _FITINS_PARAMETERS not in msg.content.array_records
        or reply.has_error()
    ):
        return reply
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
    arrays = parameters_to_ndarrays(fitres.parameters)
    expected = None
    if fitins.config.get(TASK_KEY) not in (TASK_SUMMARY, TASK_PROFILE):  # vectors, not weights
        expected = [a.shape for a in parameters_to_ndarrays(fitins.parameters)]
    try:
        validate_update(arrays, expected_shapes=expected)
    except UpdateRejectedError as exc:
        logger.error("dropping this node's update from the round: %s", exc)
        raise
    return reply
