"""SecAgg+ end to end on Flower's simulation engine: proof, not promise.

Institutions are the four real hospitals; a recording mod on each node writes the
delta it hands to SecAgg+ (before masking) to a file, and a recording grid keeps
every message the coordinator receives. Slow (Ray), and run in CI.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.client import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import bytes_to_ndarray, ndarray_to_bytes, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.compat.common import recorddict_compat as compat
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation
from scipy import stats

from client.contract.architecture import ModelSpec
from client.contract.wire import TASK_KEY, TASK_TRAIN
from client.flower_client import InstitutionClient
from client.history import StateHistory
from client.models import build_model, get_weights
from client.mods import secure_aggregation_mod, update_guard_mod
from client.node import NodeSettings
from client.secagg_guard import secagg_guard_mod_for
from privacy.config import PrivacyBudget
from server.config import federation_settings_from_run_config
from server.federation import Federation
from server.run_events import RunResult
from simulations.scenario import Scenario, load_simulated_institution

pytestmark = pytest.mark.slow

# The four hospitals, seed 0. These tests train at the run config's fixed σ = 1.0: a budget
# of ε = 10 leaves room for that round beside each node's noisy counts and summary. The
# runs in the clear evaluate in the clear, which each node's policy must allow.
SCENARIO = Scenario(
    budget=PrivacyBudget(epsilon=10.0, delta=1e-5), node_policy={"allow-clear-evaluation": True}
)
NAMES = SCENARIO.institution_names()


class RecordingGrid(Grid):
    """A grid that keeps every reply the coordinator receives."""

    def __init__(self, inner: Grid) -> None:
        self.inner = inner
        self.received: list[Message] = []

    @property
    def run(self):  # type: ignore[no-untyped-def]
        return self.inner.run

    def set_run(self, run) -> None:  # type: ignore[no-untyped-def]
        self.inner.set_run(run)

    def create_message(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return self.inner.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self.inner.pull_messages(message_ids))
        self.received.extend(replies)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = list(self.inner.send_and_receive(messages, timeout=timeout))
        self.received.extend(replies)
        return replies


def institution_of(ctxt: Context) -> str:
    return str(SCENARIO.node_config(ctxt.node_config)["institution"])


def is_training_reply(msg: Message) -> bool:
    """A round-1 reply that carries a masked update."""
    configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
    return configs is not None and Key.MASKED_PARAMETERS in configs and msg.metadata.group_id == "1"


def task_of(msg: Message) -> str | None:
    """The fedwarden task an instruction carries (a SecAgg+ stage carries its round's fit instructions)."""
    if "fitins.parameters" not in msg.content.array_records:
        return None
    return compat.recorddict_to_fitins(msg.content, keep_input=True).config.get(TASK_KEY)


def recording_mod(folder: Path):
    """Writes the delta and weight each node hands to SecAgg+ (what it would send in the clear)."""

    def mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(msg, ctxt)
        if (
            msg.metadata.message_type == MessageType.TRAIN
            and task_of(msg) == TASK_TRAIN
            and not reply.has_error()
        ):
            fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
            arrays = parameters_to_ndarrays(fitres.parameters)
            np.savez(
                folder / f"{institution_of(ctxt)}-{msg.metadata.group_id}.npz",
                *arrays,
                weight=fitres.num_examples,
            )
        return reply

    return mod


def strikes(msg: Message, ctxt: Context, victim: str, server_round: int) -> bool:
    """Whether this is the victim's training instruction of that round."""
    return (
        institution_of(ctxt) == victim
        and task_of(msg) == TASK_TRAIN
        and msg.metadata.group_id == str(server_round)
    )


def crash_mod(victim: str, server_round: int = 1):
    """The victim disappears after sharing its keys in that training round: it never sends its masked update."""

    def mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
        stage = configs.get(Key.STAGE) if configs is not None else None
        if stage == Stage.COLLECT_MASKED_VECTORS and strikes(msg, ctxt, victim, server_round):
            raise RuntimeError(f"{victim} lost power")
        return call_next(msg, ctxt)

    return mod


def corrupt_mod(victim: str, how: str, server_round: int = 1):
    """The victim's training produces a malformed update in that round (its other releases stay sound)."""

    def mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(msg, ctxt)
        if not strikes(msg, ctxt, victim, server_round) or reply.has_error():
            return reply
        fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
        arrays = parameters_to_ndarrays(fitres.parameters)
        arrays = (
            [np.full_like(a, np.nan) for a in arrays]
            if how == "nan"
            else [a.T.copy() if a.ndim == 2 else a for a in arrays]
        )
        fitres.parameters.tensors = [ndarray_to_bytes(a) for a in arrays]
        return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)

    return mod


def client_app(*mods) -> ClientApp:
    """fedwarden's client with these mods (the real ones, plus test faults and recorders)."""

    def client_fn(context: Context):  # type: ignore[no-untyped-def]
        config = SCENARIO.node_config(context.node_config)
        return InstitutionClient(
            data=load_simulated_institution(config),
            settings=NodeSettings.from_node_config(config),
            history=StateHistory(context.state),
            state=context.state,  # the run's published (noised) counts, drawn once, as in client.app
        ).to_client()

    chain: list = []
    for mod in mods:  # the node's SecAgg+ guard stands in front of the secure mod, as in client.app
        if mod is secure_aggregation_mod:
            chain.append(secagg_guard_mod_for(SCENARIO.node_config))
        chain.append(mod)
    return ClientApp(client_fn=client_fn, mods=chain)


def federate(app: ClientApp, *, secure: bool, rounds: int = 1) -> tuple[RunResult, RecordingGrid]:
    settings = federation_settings_from_run_config(
        # no reference profile: these tests are about the training rounds
        {
            "num-server-rounds": rounds,
            "secagg": secure,
            "min-institutions": len(NAMES),
            "learning-rate": 1.0,
            "profile": False,
        }
    )
    out: list[tuple[RunResult, RecordingGrid]] = []
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        recording = RecordingGrid(grid)
        out.append((Federation(settings).run(recording, context), recording))

    run_simulation(
        server_app=server,
        client_app=app,
        num_supernodes=len(NAMES),
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"log_to_driver": False},
        },
    )
    return out[0]


def recorded(folder: Path, name: str, server_round: int = 1) -> tuple[list[np.ndarray], int]:
    with np.load(folder / f"{name}-{server_round}.npz") as data:
        arrays = [data[f"arr_{i}"] for i in range(len(data.files) - 1)]
        return arrays, int(data["weight"])


def aggregate_delta(result: RunResult) -> list[np.ndarray]:
    initial = get_weights(build_model(ModelSpec.from_dict(result.model_spec), seed=0))
    return [w - w0 for w, w0 in zip(result.weights, initial, strict=True)]


def weighted_average(pairs: list[tuple[list[np.ndarray], int]]) -> list[np.ndarray]:
    total = sum(weight for _, weight in pairs)
    return [
        sum(arrays[k].astype(np.float64) * weight for arrays, weight in pairs) / total
        for k in range(len(pairs[0][0]))
    ]


def relative_error(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    diff = math.sqrt(sum(float(((g - w) ** 2).sum()) for g, w in zip(got, want, strict=True)))
    return diff / math.sqrt(sum(float((w**2).sum()) for w in want))


@pytest.fixture(scope="module")
def secure_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deltas")
    result, grid = federate(
        client_app(secure_aggregation_mod, update_guard_mod, recording_mod(folder)), secure=True
    )
    return result, grid, folder


def test_secure_aggregate_equals_fedavg_of_the_same_deltas_within_quantization(secure_run):
    result, _, folder = secure_run
    exact = weighted_average(
        [recorded(folder, name) for name in NAMES]
    )  # plain FedAvg of the same round

    error = relative_error(aggregate_delta(result), exact)

    print(f"\nSecAgg+ aggregate vs exact weighted average: relative error {error:.2e}")
    assert error < 1e-4
    assert sorted(result.rounds[0].participants) == NAMES


def test_the_coordinator_never_receives_an_individual_delta(secure_run):
    _, grid, folder = secure_run
    training_replies = [m for m in grid.received if is_training_reply(m)]
    assert len(training_replies) == len(NAMES)

    blob = b"".join(
        bytes(value)
        if isinstance(value, bytes)
        else b"".join(v for v in value if isinstance(v, bytes))
        if isinstance(value, list)
        else b""
        for message in grid.received
        for record in message.content.config_records.values()
        for value in record.values()
    )
    for message in grid.received:
        # Flower's SecAgg+ mod empties the update's arrays: only masked integers travel.
        assert all(len(record) == 0 for record in message.content.array_records.values())
    for name in NAMES:
        deltas, _ = recorded(folder, name)
        for array in deltas:
            assert array.tobytes() not in blob

    values = []
    for message in training_replies:
        arrays = [
            bytes_to_ndarray(b)
            for b in message.content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS]
        ]
        values.append(np.concatenate([a.ravel() for a in arrays[1:]]).astype(np.float64))
    masked = np.concatenate(values)
    modulus = 2**32
    # Unmasked, each coordinate sits near the middle of a 2**28-wide quantization range;
    # masked, they are uniform over the whole 2**32 modulus.
    assert stats.kstest(masked / modulus, "uniform").pvalue > 1e-3
    assert masked.std() > modulus / 8


def summed(*rounds: list[np.ndarray]) -> list[np.ndarray]:
    """Plain FedAvg's rounds add their averages: the final model's delta over several rounds."""
    return [sum(arrays) for arrays in zip(*rounds, strict=True)]


def test_a_node_lost_or_stopped_by_its_own_guard_costs_only_its_own_update(tmp_path):
    # Round 1: Switzerland loses power after sharing its keys (it never sends its masked
    # update). Round 2: Hungary's training yields NaN, which its own guard catches before
    # masking, so it drops out of the round. Each round completes with the other three.
    app = client_app(
        crash_mod("Switzerland", server_round=1),
        secure_aggregation_mod,
        update_guard_mod,
        corrupt_mod("Hungary", "nan", server_round=2),
        recording_mod(tmp_path),
    )

    result, _ = federate(app, secure=True, rounds=2)

    survivors = {}
    for record, victim in zip(result.rounds, ("Switzerland", "Hungary"), strict=True):
        assert record.aggregated and victim in record.dropped, (record.round, record.dropped)
        assert sorted(record.participants) == sorted(set(NAMES) - {victim})
        survivors[record.round] = weighted_average(
            [recorded(tmp_path, n, record.round) for n in NAMES if n != victim]
        )
    assert all(np.isfinite(w).all() for w in result.weights)
    assert relative_error(aggregate_delta(result), summed(survivors[1], survivors[2])) < 1e-4
