"""What the coordinator keeps after every round, so a run can resume where it stopped.

A ``RunCheckpoint`` holds the global weights, the aggregation strategy's own state
(FedAdam's moments, ...), the coordinator's privacy ledger snapshot (ε per
institution, who can no longer be scheduled), and what every later round needs
(preprocessing, model spec, run config). It serialises to an ``.npz`` blob with
no pickled objects, so a checkpoint read back can carry no code. With encryption
at rest on, ``seal_checkpoint`` / ``open_checkpoint`` wrap that blob in an
envelope (``privacy.envelope``): the store never holds the weights in the clear.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.server.strategy import FedOpt, Strategy

from privacy.envelope import Keyring, open_if_sealed, seal_if
from privacy.errors import ConfigError

_FORMAT = 1
_OPT_STATE = ("current_weights", "m_t", "v_t")


@dataclass(frozen=True, kw_only=True)
class RunCheckpoint:
    """The coordinator's state after ``round``."""

    round: int
    weights: list[np.ndarray]
    preprocessing: str
    model_spec: dict[str, Any]
    run_config: dict[str, Any]
    strategy_state: dict[str, list[np.ndarray]] = field(default_factory=dict)
    epsilon: dict[str, float] = field(default_factory=dict)
    exhausted: dict[str, str] = field(default_factory=dict)
    central_rounds: int = 0

    def to_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {f"weights_{i}": w for i, w in enumerate(self.weights)}
        for key, values in self.strategy_state.items():
            arrays.update({f"state_{key}_{i}": v for i, v in enumerate(values)})
        meta = {
            "format": _FORMAT,
            "round": self.round,
            "num_weights": len(self.weights),
            "state": {key: len(values) for key, values in self.strategy_state.items()},
            "preprocessing": self.preprocessing,
            "model_spec": self.model_spec,
            "run_config": self.run_config,
            "epsilon": {k: ("inf" if math.isinf(v) else v) for k, v in self.epsilon.items()},
            "exhausted": self.exhausted,
            "central_rounds": self.central_rounds,
        }
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> RunCheckpoint:
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                if meta.get("format") != _FORMAT:
                    raise ConfigError(f"unknown checkpoint format {meta.get('format')!r}")
                weights = [data[f"weights_{i}"] for i in range(meta["num_weights"])]
                state = {
                    key: [data[f"state_{key}_{i}"] for i in range(count)]
                    for key, count in meta["state"].items()
                }
        except (ValueError, KeyError, OSError) as exc:
            raise ConfigError(f"checkpoint is unreadable: {exc}") from exc
        return cls(
            round=int(meta["round"]),
            weights=weights,
            preprocessing=meta["preprocessing"],
            model_spec=meta["model_spec"],
            run_config=meta["run_config"],
            strategy_state=state,
            epsilon={k: float(v) for k, v in meta["epsilon"].items()},
            exhausted=dict(meta["exhausted"]),
            central_rounds=int(meta["central_rounds"]),
        )


def seal_checkpoint(checkpoint: RunCheckpoint, *, keyring: Keyring | None) -> bytes:
    """The checkpoint's blob as the store keeps it: sealed when a keyring is given."""
    return seal_if(keyring, checkpoint.to_bytes())


def open_checkpoint(blob: bytes, *, keyring: Keyring | None, what: str) -> RunCheckpoint:
    """A stored checkpoint back, decrypted if sealed (raises ``EncryptionError`` if it won't)."""
    return RunCheckpoint.from_bytes(open_if_sealed(keyring, blob, what=what))


def capture_strategy_state(strategy: Strategy) -> dict[str, list[np.ndarray]]:
    """The state Flower's strategy carries between rounds (FedOpt's weights and moments)."""
    if not isinstance(strategy, FedOpt):
        return {}  # FedAvg, FedProx, FedMedian, FedTrimmedAvg, Krum: nothing between rounds
    return {
        key: [np.asarray(a) for a in getattr(strategy, key)]
        for key in _OPT_STATE
        if getattr(strategy, key, None) is not None
    }


def restore_strategy_state(strategy: Strategy, state: dict[str, list[np.ndarray]]) -> None:
    """Put state captured by ``capture_strategy_state`` back into a fresh strategy."""
    if not state:
        return
    if not isinstance(strategy, FedOpt):
        raise ConfigError(f"checkpoint holds optimizer state that {type(strategy).__name__} lacks")
    for key, values in state.items():
        if key not in _OPT_STATE:
            raise ConfigError(f"unknown strategy state {key!r} in checkpoint")
        setattr(strategy, key, [np.asarray(v) for v in values])
