"""An institution's own settings, read from its node config: never from the coordinator."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from client.contract.values import parse_flag
from privacy.config import PrivacyBudget
from privacy.errors import ConfigError
from privacy.policy import DEFAULT_COUNT_NOISE, TASKS, NodePolicy

DEFAULT_BUDGET_EPSILON = 1.0
DEFAULT_BUDGET_DELTA = 1e-5


@dataclass(frozen=True, kw_only=True)
class NodeSettings:
    """What an institution decides for itself.

    Parameters
    ----------
    budget : PrivacyBudget
        The (ε, δ) it will spend at most; enforced before every round.
    device : str
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.
    require_secagg : bool
        Refuse to send a training update that is not masked by SecAgg+.
    history_path : str | None
        A file that keeps the privacy history across runs; ``None`` keeps it for
        one run, in Flower's node state.
    torch_threads : int
        Threads for torch on this node (1 is fastest for small models).
    policy : NodePolicy
        What the institution allows, whatever a run asks (``privacy.policy``).
    """

    budget: PrivacyBudget
    device: str = "auto"
    require_secagg: bool = False
    history_path: str | None = None
    torch_threads: int = 1
    policy: NodePolicy = field(default_factory=NodePolicy)

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> NodeSettings:
        """Translate kebab-case node config keys (``budget-epsilon``, ...) into settings."""
        try:
            settings = cls(
                budget=PrivacyBudget(
                    epsilon=float(node_config.get("budget-epsilon", DEFAULT_BUDGET_EPSILON)),
                    delta=float(node_config.get("budget-delta", DEFAULT_BUDGET_DELTA)),
                ),
                device=str(node_config.get("device", "auto")),
                require_secagg=parse_flag(
                    node_config.get("require-secagg", False), name="node config require-secagg"
                ),
                history_path=(
                    str(node_config["history-path"]) if "history-path" in node_config else None
                ),
                torch_threads=int(node_config.get("torch-threads", 1)),
                policy=_policy(node_config),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"node config is malformed: {exc}") from exc
        if settings.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {settings.device!r}")
        if settings.torch_threads < 1:
            raise ConfigError(f"torch-threads must be >= 1, got {settings.torch_threads}")
        return settings


def _policy(node_config: Mapping[str, Any]) -> NodePolicy:
    """The node's privacy policy from its own config keys (``allow-non-dp``, ...)."""

    def flag(key: str) -> bool:
        return parse_flag(node_config.get(key, False), name=f"node config {key}")

    tasks = node_config.get("tasks")
    return NodePolicy(
        allow_non_dp=flag("allow-non-dp"),
        min_noise_multiplier=float(node_config.get("min-noise-multiplier", 0.3)),
        allow_reproducible=flag("allow-reproducible"),
        allow_exact_releases=flag("allow-exact-releases"),
        allow_clear_evaluation=flag("allow-clear-evaluation"),
        count_noise_multiplier=float(
            node_config.get("count-noise-multiplier", DEFAULT_COUNT_NOISE)
        ),
        tasks=TASKS
        if tasks in (None, "")
        else frozenset(t.strip() for t in str(tasks).split(",") if t.strip()),
    )
