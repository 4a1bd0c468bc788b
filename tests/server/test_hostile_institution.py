"""A node WITHOUT fedwarden's update guard attacks a real run, in the clear and under SecAgg+.

Each attack of the review: every value 1e6, NaN, or 10^6 claimed training rows.
In the clear the coordinator drops the hostile reply and averages the others;
under SecAgg+ (where it sees only the unmasked sum) it discards the round, so
the global model is never the corrupted one. Slow (Ray), run in CI.
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
    institution_of,
    recorded,
    recording_mod,
    relative_error,
    weighted_average,
)

pytestmark = pytest.mark.slow

VICTIM = "Hungary"


def hostile_mod(attack: str):
    """The hostile institution's reply, as its own code (no guard) would send it."""

    def mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(msg, ctxt)
        if institution_of(ctxt) != VICTIM or "fitins.parameters" not in msg.content.array_records:
            return reply
        if reply.has_error():
            return reply
        fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
        task = compat.recorddict_to_fitins(msg.content, keep_input=True).config.get("fw.task")
        if task != "train" or not fitres.parameters.tensors:
            return reply
        arrays = parameters_to_ndarrays(fitres.parameters)
        if attack == "huge":
            arrays = [np.full_like(a, 1e6) for a in arrays]
        elif attack == "nan":
            arrays = [np.full_like(a, np.nan) for a in arrays]
        else:
            fitres.num_examples = 10**6
        fitres.parameters.tensors = [ndarray_to_bytes(a) for a in arrays]
        return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)

    return mod


@pytest.mark.parametrize("attack", ["huge", "nan", "rows"])
def test_in_the_clear_the_hostile_reply_is_dropped(tmp_path, attack):
    app = client_app(hostile_mod(attack), recording_mod(tmp_path))

    result, _ = federate(app, secure=False)

    record = result.rounds[0]
    assert record.aggregated and VICTIM in record.rejected and VICTIM not in record.participants
    others = weighted_average([recorded(tmp_path, name) for name in NAMES if name != VICTIM])
    assert relative_error(aggregate_delta(result), others) < 1e-4


@pytest.mark.parametrize("attack", ["huge", "nan", "rows"])
def test_under_secagg_the_round_is_discarded_and_the_model_untouched(tmp_path, attack):
    app = client_app(secure_aggregation_mod, hostile_mod(attack), recording_mod(tmp_path))

    result, _ = federate(app, secure=True)

    record = result.rounds[0]
    assert not record.aggregated and record.discarded is not None
    assert record.participants == []
    assert all(np.isfinite(w).all() for w in result.weights)
    assert all(float(np.abs(d).max()) == 0.0 for d in aggregate_delta(result))
