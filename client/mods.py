"""Flower client mods that sit between the network and the institution's client.

``secure_aggregation_mod`` runs SecAgg+ (Flower's ``secaggplus_mod``) when the
coordinator asks for it, and, where the institution requires it, refuses to
send a training reply in the clear. ``update_guard_mod`` checks every outgoing
update (finite, of the model's shape) before it is masked or sent: a bad one is
dropped from the round with its reason, never aggregated. ``release_manifest_mod``
holds every reply to the release manifest (``privacy.releases``).
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
from flwr.common.constant import MessageTypeLegacy
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat

from client.contract import shamir_seam
from client.contract.wire import (
    TASK_EVALUATE,
    TASK_INIT,
    TASK_KEY,
    TASK_PROFILE,
    TASK_SUMMARY,
    TASK_TRAIN,
)
from client.node import NodeSettings
from privacy.errors import (
    PolicyRefusalError,
    SecureAggregationRequiredError,
    UndeclaredReleaseError,
    UpdateRejectedError,
)
from privacy.releases import (
    EVALUATE,
    GET_PARAMETERS,
    GET_PROPERTIES,
    TRAIN,
    Release,
    check_reply,
    release_for,
)
from privacy.updates import validate_update

logger = logging.getLogger(__name__)

_FITINS_PARAMETERS = "fitins.parameters"


def secure_aggregation_mod_for(
    node_config: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
) -> Mod:
    """A mod that routes training messages through SecAgg+ when the coordinator runs it.

    ``node_config`` completes the node's config, as in ``create_client_app``;
    ``require-secagg`` is read from the result. Flower's Shamir splitting is replaced by
    ``privacy.shamir``'s (the same shares, about 10× faster; ``client.contract.shamir_seam``).
    """
    shamir_seam.install()

    def secure_aggregation_mod(
        msg: Message, ctxt: Context, call_next: ClientAppCallable
    ) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, ctxt)
        if RECORD_KEY_CONFIGS in msg.content.config_records:
            return secaggplus_mod(msg, ctxt, call_next)
        config = node_config(ctxt.node_config) if node_config else ctxt.node_config
        settings = NodeSettings.from_node_config(config)
        task = (
            compat.recorddict_to_fitins(msg.content, keep_input=True).config.get(TASK_KEY)
            if _FITINS_PARAMETERS in msg.content.array_records
            else None
        )
        if task == TASK_EVALUATE and not settings.policy.allow_clear_evaluation:
            # The federation's evaluation is a secure sum: in the clear it would be this
            # institution's own exact accuracy on its rows.
            logger.error("refusing to send an evaluation outside secure aggregation")
            raise PolicyRefusalError(
                "this institution sends its evaluation only into a secure sum (SecAgg+); its "
                "policy does not allow an evaluation in the clear",
                task=TASK_EVALUATE,
            )
        if settings.require_secagg:
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
    if fitins.config.get(TASK_KEY) not in (TASK_SUMMARY, TASK_PROFILE, TASK_EVALUATE):  # vectors
        expected = [a.shape for a in parameters_to_ndarrays(fitins.parameters)]
    try:
        validate_update(arrays, expected_shapes=expected)
    except UpdateRejectedError as exc:
        logger.error("dropping this node's update from the round: %s", exc)
        raise
    return reply


_LEGACY_RECORDS = {
    MessageType.TRAIN: {
        "fitres.metrics",
        "fitres.num_examples",
        "fitres.parameters",
        "fitres.status",
    },
    MessageType.EVALUATE: {
        "evaluateres.loss",
        "evaluateres.num_examples",
        "evaluateres.metrics",
        "evaluateres.status",
    },
    MessageTypeLegacy.GET_PROPERTIES: {"getpropertiesres.properties", "getpropertiesres.status"},
    MessageTypeLegacy.GET_PARAMETERS: {"getparametersres.parameters", "getparametersres.status"},
}
"""The records of each kind of reply the institution's client writes (Flower's compat layout)."""


def release_manifest_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Hold every reply to the release manifest (``privacy.releases``) before it leaves.

    The innermost mod: it sees what the institution's client answered, before SecAgg+
    masks it. A reply with an undeclared record or key, a number where only NaN is
    declared, or arrays or a weight where its release declares none raises
    ``UndeclaredReleaseError``: the node answers with an error, not with the reply.
    """
    reply = call_next(msg, ctxt)
    if reply.has_error():
        return reply  # a refusal: its reason, in words
    check_outgoing(msg, reply)
    return reply


def check_outgoing(msg: Message, reply: Message) -> Release:
    """The manifest entry ``reply`` (to ``msg``) falls under; raise if it does not fit it."""
    message_type = msg.metadata.message_type
    records = set(reply.content.keys())
    declared = _LEGACY_RECORDS.get(message_type)
    if declared is None or not records <= declared:
        raise UndeclaredReleaseError(
            f"a reply to a {message_type!r} message carries records "
            f"{', '.join(sorted(records - (declared or set())))} the release manifest does "
            "not declare",
            message_type=message_type,
        )
    if message_type == MessageType.TRAIN:
        task = compat.recorddict_to_fitins(msg.content, keep_input=True).config.get(TASK_KEY)
        fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
        release = release_for(message_type=TRAIN, task=str(task or TASK_TRAIN))
        check_reply(
            release,
            keys=dict(fitres.metrics),
            has_arrays=bool(fitres.parameters.tensors),
            weight=fitres.num_examples,
        )
    elif message_type == MessageType.EVALUATE:
        evaluateres = compat.recorddict_to_evaluateres(reply.content)
        release = release_for(message_type=EVALUATE, task=TASK_EVALUATE)
        check_reply(
            release,
            keys=dict(evaluateres.metrics),
            has_arrays=False,
            weight=evaluateres.num_examples,
        )
    elif message_type == MessageTypeLegacy.GET_PROPERTIES:
        properties = compat.recorddict_to_getpropertiesres(reply.content).properties
        release = release_for(message_type=GET_PROPERTIES, task=None)
        check_reply(release, keys=dict(properties), has_arrays=False, weight=0)
    else:
        release = release_for(message_type=GET_PARAMETERS, task=TASK_INIT)
        check_reply(release, keys={}, has_arrays=True, weight=0)
    return release
