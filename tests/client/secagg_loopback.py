"""Flower's real SecAgg+ (server workflow and client mod) over an in-process transport.

``LoopbackGrid`` is a working fake of the network only: it serialises each
message to its protobuf and back, as the wire does, hands it to a real Flower
``ClientApp`` (the node's mods, then a small NumPy client) and keeps every
message either way, which is all a coordinator sees. ``reconstruct`` is what a
hostile coordinator does with the shares an unmask request got back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.client import ClientApp, NumPyClient
from flwr.clientapp.typing import Mod
from flwr.common import bytes_to_ndarray
from flwr.common.constant import ErrorCode
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_extract,
    parameters_addition,
    parameters_mod,
    parameters_subtraction,
)
from flwr.common.secure_aggregation.quantization import dequantize
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.server import LegacyContext, ServerConfig, SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import FedAvg
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid
from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key

SHAPES = [(5,), (3, 2)]


def update_of(node_id: int) -> list[np.ndarray]:
    """The update node ``node_id`` trains: fixed per node, within SecAgg+'s clipping range."""
    rng = np.random.default_rng(node_id)
    return [rng.uniform(-1, 1, size=shape).astype(np.float32) for shape in SHAPES]


class _FixedClient(NumPyClient):
    def __init__(self, node_id: int, rows: int) -> None:
        self.node_id = node_id
        self.rows = rows

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
        return update_of(self.node_id), self.rows, {}


def node_app(mods: Sequence[Mod], rows: int = 10) -> ClientApp:
    """A real ClientApp with ``mods`` in front of a client that returns ``update_of``."""
    return ClientApp(
        client_fn=lambda context: _FixedClient(context.node_id, rows).to_client(),
        mods=list(mods),
    )


class LoopbackGrid(Grid):
    """Delivers messages to in-process ClientApps, serialised as on the wire."""

    def __init__(
        self, apps: dict[int, ClientApp], node_configs: dict[int, dict[str, Any]] | None = None
    ) -> None:
        self.apps = apps
        self.contexts = {
            nid: Context(
                run_id=1,
                node_id=nid,
                node_config=(node_configs or {}).get(nid, {}),
                state=RecordDict(),
                run_config={},
            )
            for nid in apps
        }
        self.sent: list[Message] = []
        self.received: list[Message] = []
        self._next_id = 0

    @property
    def run(self) -> Any:
        raise NotImplementedError

    def set_run(self, run: Any) -> None:
        raise NotImplementedError

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(self.apps)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = []
        for message in messages:
            self._next_id += 1
            wire = message_to_proto(message)
            wire.metadata.message_id = f"m{self._next_id}"
            delivered = message_from_proto(wire)
            self.sent.append(message_from_proto(wire))  # the node's mods change what they get
            nid = delivered.metadata.dst_node_id
            try:
                reply = self.apps[nid](delivered, self.contexts[nid])
            except Exception as exc:
                reply = Message(
                    Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(exc).__name__}: {exc}"),
                    reply_to=delivered,
                )
            reply = message_from_proto(message_to_proto(reply))
            self.received.append(reply)
            replies.append(reply)
        return replies


def legacy_context(grid: LoopbackGrid, *, sample: int | None = None) -> LegacyContext:
    """A coordinator's context: FedAvg over the grid's nodes, round 1, zero weights."""
    n = len(grid.apps)
    sample = sample or n
    manager = SimpleClientManager()
    for nid in grid.apps:
        manager.register(GridClientProxy(nid, grid, run_id=1))
    strategy = FedAvg(
        fraction_fit=sample / n,
        min_fit_clients=sample,
        min_available_clients=sample,
        fraction_evaluate=0.0,
    )
    context = LegacyContext(
        context=Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}),
        config=ServerConfig(num_rounds=1),
        strategy=strategy,
        client_manager=manager,
    )
    context.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord(
        [np.zeros(shape, dtype=np.float32) for shape in SHAPES]
    )
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: 1})
    return context


def global_update(context: LegacyContext) -> list[np.ndarray]:
    record = context.state.array_records[MAIN_PARAMS_RECORD]
    return [a.numpy() for a in record.values()]


def configs_of(message: Message) -> ConfigRecord:
    return message.content.config_records[RECORD_KEY_CONFIGS]


def shares_for(grid: LoopbackGrid, victim: int) -> tuple[list[bytes], list[bytes]]:
    """The victim's mask-seed shares and key shares that unmask replies handed over."""
    requests = {
        m.metadata.message_id: configs_of(m)
        for m in grid.sent
        if RECORD_KEY_CONFIGS in m.content.config_records
        and configs_of(m).get(Key.STAGE) == Stage.UNMASK
    }
    seed_shares: list[bytes] = []
    key_shares: list[bytes] = []
    for reply in grid.received:
        request = requests.get(reply.metadata.reply_to_message_id)
        if request is None or reply.has_error():
            continue
        nids = list(configs_of(reply)[Key.NODE_ID_LIST])  # type: ignore[arg-type]
        shares = list(configs_of(reply)[Key.SHARE_LIST])  # type: ignore[arg-type]
        n_active = len(request[Key.ACTIVE_NODE_ID_LIST])  # type: ignore[arg-type]
        for index, (owner, share) in enumerate(zip(nids, shares, strict=True)):
            if owner == victim:
                (seed_shares if index < n_active else key_shares).append(share)
    return seed_shares, key_shares


def reconstruct(
    grid: LoopbackGrid,
    *,
    victim: int,
    threshold: int,
    clipping_range: float,
    target_range: int,
    mod_range: int,
) -> list[np.ndarray] | None:
    """The victim's own update, from its masked input and the shares the coordinator got.

    ``None`` when the coordinator holds fewer than ``threshold`` of either secret.
    """
    seed_shares, key_shares = shares_for(grid, victim)
    if len(set(seed_shares)) < threshold or len(set(key_shares)) < threshold:
        return None
    rd_seed = combine_shares(list(set(seed_shares))[:threshold])
    sk1 = combine_shares(list(set(key_shares))[:threshold])
    masked = None
    public_keys: dict[int, bytes] = {}
    for reply in grid.received:
        if reply.has_error() or RECORD_KEY_CONFIGS not in reply.content.config_records:
            continue
        configs = configs_of(reply)
        src = reply.metadata.src_node_id
        if Key.PUBLIC_KEY_1 in configs:
            public_keys[src] = configs[Key.PUBLIC_KEY_1]  # type: ignore[assignment]
        if Key.MASKED_PARAMETERS in configs and src == victim:
            masked = [bytes_to_ndarray(b) for b in configs[Key.MASKED_PARAMETERS]]  # type: ignore[union-attr]
    assert masked is not None
    shapes = [a.shape for a in masked]
    vector = parameters_subtraction(masked, pseudo_rand_gen(rd_seed, mod_range, shapes))
    for other, pk1 in public_keys.items():
        if other == victim:
            continue
        key = generate_shared_key(bytes_to_private_key(sk1), bytes_to_public_key(pk1))
        mask = pseudo_rand_gen(key, mod_range, shapes)
        vector = (
            parameters_subtraction(vector, mask)
            if victim > other
            else parameters_addition(vector, mask)
        )
    vector = parameters_mod(vector, mod_range)
    q_ratio, quantized = factor_extract(vector)
    values = dequantize(quantized, clipping_range, target_range)
    return [v * (target_range / q_ratio) for v in values]
