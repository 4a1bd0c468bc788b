"""A node WITHOUT fedwarden's update guard attacks a real run, in the clear and under SecAgg+.

Each attack of the review, one per round: every value 1e6, NaN, 10^6 claimed
training rows, and (in the clear) transposed arrays. In the clear the coordinator
drops the hostile reply and averages the others; under SecAgg+ (where it sees
only the unmasked sum) it discards the round, so the global model is never the
corrupted one. Slow (Ray), run in CI.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import ndarray_to_bytes, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat

from client.mods import secure_aggregation_mod
from tests.server.test_secure_aggregation import (
    NAMES,
    aggregate_delta,
    client_app,
    federate,
    recorded,
    recording_mod,
    relative_error,
    strikes,
    summed,
    weighted_average,
)

pytestmark = pytest.mark.slow

VICTIM = "Hungary"

# Round r carries attack r; what the coordinator says when it drops the reply in the clear.
CLEAR = {"huge": "", "nan": "NaN or Inf", "rows": "training rows", "shape": "has shape"}
SECURE = ("huge", "nan", "rows")


def hostile_mod(attacks: tuple[str, ...]):
    """The hostile institution's replies, as its own code (no guard) would send them."""

    def mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(msg, ctxt)
        rounds = [r for r in range(1, len(attacks) + 1) if strikes(msg, ctxt, VICTIM, r)]
        if not rounds or reply.has_error():
            return reply
        attack = attacks[rounds[0] - 1]
        fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
        arrays = parameters_to_ndarrays(fitres.parameters)
        if attack == "huge":
            arrays = [np.full_like(a, 1e6) for a in arrays]
        elif attack == "nan":
            arrays = [np.full_like(a, np.nan) for a in arrays]
        elif attack == "shape":
            arrays = [a.T.copy() if a.ndim == 2 else a for a in arrays]
        else:
            fitres.num_examples = 10**6
        fitres.parameters.tensors = [ndarray_to_bytes(a) for a in arrays]
        return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)

    return mod


def test_in_the_clear_each_hostile_reply_is_dropped_and_the_others_averaged(tmp_path):
    attacks = tuple(CLEAR)
    app = client_app(hostile_mod(attacks), recording_mod(tmp_path))

    result, _ = federate(app, secure=False, rounds=len(attacks))

    averages = []
    for record, attack in zip(result.rounds, attacks, strict=True):
        assert record.aggregated and VICTIM not in record.participants, attack
        assert CLEAR[attack] in record.rejected[VICTIM], (attack, record.rejected)
        averages.append(
            weighted_average([recorded(tmp_path, n, record.round) for n in NAMES if n != VICTIM])
        )
    assert all(np.isfinite(w).all() for w in result.weights)
    assert relative_error(aggregate_delta(result), summed(*averages)) < 1e-4


def test_under_secagg_each_hostile_round_is_discarded_and_the_model_untouched(tmp_path):
    app = client_app(secure_aggregation_mod, hostile_mod(SECURE), recording_mod(tmp_path))

    result, _ = federate(app, secure=True, rounds=len(SECURE))

    assert len(result.rounds) == len(SECURE)
    for record, attack in zip(result.rounds, SECURE, strict=True):
        assert not record.aggregated and record.discarded is not None, attack
        assert record.participants == [], attack
    assert all(np.isfinite(w).all() for w in result.weights)
    assert all(float(np.abs(d).max()) == 0.0 for d in aggregate_delta(result))
