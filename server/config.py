"""The coordinator's settings for a run, translated from Flower's ``run_config``.

``federation_settings_from_run_config`` is the one place where kebab-case
``run_config`` keys become typed settings (the plan, the strategy, SecAgg+,
central DP, the reference profile, and where the run is recorded); everything
downstream takes the frozen dataclasses. It reads no environment: the store's
URL comes from the run config, as ``database-url`` or as ``database-url-file``
(a 0600 file the coordinator writes, ``server.store_url``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.contract.plan import TrainingPlan
from client.contract.profile import PROFILE_NOISY_RANGE
from client.contract.values import parse_flag
from privacy.config import DPConfig, check_release_noise
from privacy.errors import ConfigError
from privacy.secagg import MIN_SECURE_PARTICIPANTS, check_min_participants
from server.strategies import CENTRAL_DP_STRATEGIES, ROBUST_STRATEGIES, StrategySettings

DEFAULT_SUMMARY_NOISE = 15.0
"""σ of the preprocessing summary (× one row's contribution bound) unless a run says.

Chosen on the default heart-disease run (fresh noise each run): σ 6 left training σ 5.70
and reached 0.755 on average over four runs, σ 15 (with the profile at 15) leaves training
σ 4.40 and reached 0.775 over six; σ 30 made the scaling itself too noisy (0.740 over four,
one run at 0.666)."""
DEFAULT_PROFILE_NOISE = 15.0
"""σ of the reference profile (× its count sensitivity) unless a run says."""


@dataclass(frozen=True, kw_only=True)
class SecAggSettings:
    """SecAgg+ settings; ``None`` fields are derived from the number of institutions.

    ``min_participants`` is k (run config ``min-secure-participants``): the
    coordinator never runs a secure round of fewer institutions. ``timeout_s``
    (``secagg-timeout``) is each stage's wait; ``None`` derives a finite one from
    the previous round's duration (``privacy.secagg.secagg_timeout_s``).
    """

    num_shares: int | None = None
    reconstruction_threshold: int | None = None
    timeout_s: float | None = None
    min_participants: int = MIN_SECURE_PARTICIPANTS

    def __post_init__(self) -> None:
        check_min_participants(self.min_participants, source="run config 'min-secure-participants'")
        if self.timeout_s is not None and not (0 < self.timeout_s < math.inf):
            raise ConfigError(
                f"run config 'secagg-timeout' must be a finite number > 0, got {self.timeout_s}"
            )


@dataclass(frozen=True, kw_only=True)
class CentralDPSettings:
    """Institution-level DP-FedAvg on top of local DP-SGD.

    Each institution's clipped update (L2 norm at most the plan's update bound)
    is averaged with equal weights and the coordinator adds Gaussian noise of
    standard deviation ``noise_multiplier * bound / contributors``: Flower's
    client-side fixed-clipping wrapper. ``delta`` is the institution-level δ.
    """

    noise_multiplier: float = 1.0
    delta: float = 1e-3

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0:
            raise ConfigError(f"central noise multiplier must be > 0, got {self.noise_multiplier}")
        if not 0 < self.delta < 1:
            raise ConfigError(f"central δ must be in (0, 1), got {self.delta}")


@dataclass(frozen=True, kw_only=True)
class ProfileSettings:
    """Whether a run ends with a reference profile, and the DP noise on its counts.

    Parameters
    ----------
    enabled : bool
        Compute the profile after the last round (run config ``profile``).
    noise_multiplier : float, optional
        σ of the Gaussian noise each institution adds to its counts, relative
        to their L2 sensitivity (run config ``profile-noise-multiplier``);
        ``None`` sends exact counts, protected by secure aggregation only.
    """

    enabled: bool = True
    noise_multiplier: float | None = DEFAULT_PROFILE_NOISE

    def __post_init__(self) -> None:
        check_release_noise(self.noise_multiplier, release="profile")

    @property
    def value_range(self) -> float:
        """Largest absolute share an institution sends (SecAgg+'s clipping range)."""
        return 1.0 if self.noise_multiplier is None else PROFILE_NOISY_RANGE


@dataclass(frozen=True, kw_only=True)
class RecordSettings:
    """Where the coordinator keeps what a run did.

    Parameters
    ----------
    database_url : str, optional
        The governance store (run config ``database-url``); ``None``: the run is
        not recorded (and cannot be resumed).
    output_dir : Path, optional
        Where ``ledger.jsonl`` is written (``output-dir``).
    run_id, run_name : str
        The store's id for the run (``run-id``; new when empty) and its name.
    resume : bool
        Carry run ``run_id`` on from its last checkpoint (``resume``).
    """

    database_url: str | None = None
    output_dir: Path | None = None
    run_id: str | None = None
    run_name: str = "federation"
    resume: bool = False

    def __post_init__(self) -> None:
        if self.resume and self.database_url is None:
            raise ConfigError("resuming a run needs the store that holds its checkpoints")


@dataclass(frozen=True, kw_only=True)
class FederationSettings:
    """Everything the coordinator needs to run one federation."""

    plan: TrainingPlan = field(
        default_factory=lambda: TrainingPlan(
            summary_noise_multiplier=DEFAULT_SUMMARY_NOISE,
            profile_noise_multiplier=DEFAULT_PROFILE_NOISE,
        )
    )
    strategy: StrategySettings = field(default_factory=StrategySettings)
    secagg: SecAggSettings | None = None
    central_dp: CentralDPSettings | None = None
    min_institutions: int = 2
    epsilon_cap: float | None = None
    round_timeout_s: float | None = None
    wait_timeout_s: float = 300.0
    profile: ProfileSettings = field(default_factory=ProfileSettings)
    record: RecordSettings = field(default_factory=RecordSettings)
    run_config: Mapping[str, Any] = field(default_factory=dict)
    """The run configuration as given: kept only to be written into checkpoints."""

    def __post_init__(self) -> None:
        if self.min_institutions < 2:
            raise ConfigError(f"a federation needs >= 2 institutions, got {self.min_institutions}")
        if self.epsilon_cap is not None and not self.epsilon_cap > 0:
            raise ConfigError(f"ε cap must be > 0, got {self.epsilon_cap}")
        if self.secagg is not None and self.strategy.name in ROBUST_STRATEGIES:
            raise ConfigError(
                f"strategy {self.strategy.name!r} needs each institution's update, which secure "
                "aggregation hides from the coordinator; use fedavg, fedprox or fedadam with "
                "secure aggregation, or turn it off (--no-secagg / secagg=false)",
                strategy=self.strategy.name,
            )
        if self.central_dp is not None and self.strategy.name in ROBUST_STRATEGIES:
            raise ConfigError(
                f"central DP bounds each institution's share of an average; strategy "
                f"{self.strategy.name!r} is not an average",
                strategy=self.strategy.name,
            )
        if self.central_dp is not None and self.strategy.name not in CENTRAL_DP_STRATEGIES:
            raise ConfigError(
                f"central DP with strategy {self.strategy.name!r} would add Flower's noise after "
                "its server-side optimiser step, so the noise no longer matches the update's "
                f"sensitivity; use {' or '.join(sorted(CENTRAL_DP_STRATEGIES))} with central DP",
                strategy=self.strategy.name,
            )
        if self.central_dp is not None and not self.plan.uniform_weights:
            raise ConfigError("central DP needs equally weighted institutions (uniform weights)")

    def describe(self) -> dict[str, Any]:
        """What a run records of its settings (in the store and its checkpoints)."""
        return {
            "plan": self.plan.to_config(),
            "strategy": self.strategy.name,
            "secagg": self.secagg is not None,
            "min_institutions": self.min_institutions,
            "epsilon_cap": self.epsilon_cap,
        }


def federation_settings_from_run_config(run_config: Mapping[str, Any]) -> FederationSettings:
    """Translate Flower's ``run_config`` (kebab-case keys) into ``FederationSettings``.

    Unknown keys are ignored (Flower adds its own); malformed values raise
    ``ConfigError`` naming the key.
    """
    get = _Reader(run_config)
    profile = ProfileSettings(
        enabled=get.flag("profile", True),
        noise_multiplier=get.release_noise("profile-noise-multiplier", DEFAULT_PROFILE_NOISE),
    )
    dp = DPConfig(
        enabled=get.flag("dp", True),
        noise_multiplier=get.optional_number("noise-multiplier"),
        target_epsilon=get.optional_number("target-epsilon"),
        max_grad_norm=get.number("max-grad-norm", 1.0),
        target_delta=get.number("target-delta", 1e-5),
        accountant=get.text("accountant", "prv"),
    )
    plan = TrainingPlan(
        model=get.text("model", "logreg"),
        hidden=get.integer("hidden", 32),
        num_rounds=get.integer("num-server-rounds", 5),
        local_epochs=get.integer("local-epochs", 1),
        learning_rate=get.number("learning-rate", 1.0),
        sample_rate=get.number("sample-rate", 0.2),
        seed=get.integer("seed", 0),
        update_clip_norm=get.optional_number("update-clip-norm"),
        uniform_weights=get.flag("uniform-weights", False) or get.flag("central-dp", False),
        dp=dp,
        # Derived training noise leaves room in each budget for the noisy profile.
        profile_noise_multiplier=profile.noise_multiplier if profile.enabled else None,
        summary_noise_multiplier=get.release_noise(
            "summary-noise-multiplier", DEFAULT_SUMMARY_NOISE
        ),
        reproducible=get.flag("insecure-reproducible", False),
    )
    strategy = StrategySettings(
        name=get.text("strategy", "fedavg"),
        proximal_mu=get.number("proximal-mu", 0.1),
        server_learning_rate=get.number("server-learning-rate", 0.1),
        trim_beta=get.number("trim-beta", 0.2),
        byzantine=get.integer("byzantine", 0),
        fraction_fit=get.number("fraction-fit", 1.0),
    )
    central = None
    if get.flag("central-dp", False):
        central = CentralDPSettings(
            noise_multiplier=get.number("central-noise-multiplier", 1.0),
            delta=get.number("central-delta", 1e-3),
        )
    secagg = None
    if get.flag("secagg", True):
        secagg = SecAggSettings(
            num_shares=get.optional_integer("secagg-num-shares"),
            reconstruction_threshold=get.optional_integer("secagg-threshold"),
            timeout_s=get.optional_number("secagg-timeout"),
            min_participants=get.integer("min-secure-participants", MIN_SECURE_PARTICIPANTS),
        )
    return FederationSettings(
        plan=plan,
        strategy=strategy,
        secagg=secagg,
        central_dp=central,
        min_institutions=get.integer("min-institutions", 2),
        epsilon_cap=get.optional_number("epsilon-cap"),
        round_timeout_s=get.optional_number("round-timeout"),
        wait_timeout_s=get.number("wait-timeout", 300.0),
        profile=profile,
        record=RecordSettings(
            database_url=get.optional_text("database-url")
            or _url_from_file(get.optional_text("database-url-file")),
            output_dir=_path(get.optional_text("output-dir")),
            run_id=get.optional_text("run-id"),
            run_name=get.optional_text("run-name") or "federation",
            resume=get.flag("resume", False),
        ),
        run_config=dict(run_config),
    )


def _url_from_file(path: str | None) -> str | None:
    if path is None:
        return None
    from server.store_url import read_store_url

    return read_store_url(Path(path))


class _Reader:
    """Typed reads of run_config values; an absent or empty optional value is None."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    def _convert(self, key: str, default: Any, kind: type) -> Any:
        value = self.config.get(key, default)
        try:
            converted = kind(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"run config {key!r} must be {kind.__name__}, got {value!r}") from exc
        if kind is float and math.isnan(converted):
            raise ConfigError(f"run config {key!r} is NaN")
        return converted

    def text(self, key: str, default: str) -> str:
        return str(self._convert(key, default, str))

    def integer(self, key: str, default: int) -> int:
        return int(self._convert(key, default, int))

    def number(self, key: str, default: float) -> float:
        return float(self._convert(key, default, float))

    def flag(self, key: str, default: bool) -> bool:
        return parse_flag(self.config.get(key, default), name=f"run config {key!r}")

    def optional_number(self, key: str) -> float | None:
        if key not in self.config or self.config[key] in ("", None):
            return None
        return self.number(key, 0.0)

    def release_noise(self, key: str, default: float) -> float | None:
        """σ of a Gaussian release: absent or empty is ``default``; 0 asks for it exact."""
        if key not in self.config or self.config[key] in ("", None):
            return default
        sigma = self.number(key, default)
        return None if sigma == 0 else sigma

    def optional_text(self, key: str) -> str | None:
        if key not in self.config or self.config[key] in ("", None):
            return None
        return self.text(key, "")

    def optional_integer(self, key: str) -> int | None:
        if key not in self.config or self.config[key] in ("", None):
            return None
        return self.integer(key, 0)


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)
