"""Run a federation on Flower's simulation engine (Ray), in this process.

``simulate`` checks every setting before Ray starts, runs the ServerApp and one
ClientApp per simulated institution, and trains the pooled baseline beside it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from flwr.clientapp.typing import Mod

from client.app import create_client_app
from client.models import IMAGE_MODELS
from privacy.account import InstitutionAccount, MemoryHistory
from privacy.config import PrivacyBudget
from privacy.errors import (
    BudgetExceededError,
    BudgetSpentError,
    ConfigError,
    TooFewParticipantsError,
)
from privacy.sampling import training_step
from server.app import create_server_app
from server.config import FederationSettings, federation_settings_from_run_config
from server.errors import FederationError
from server.run_events import RunObserver, RunResult, notify_phase
from simulations import fast_linkstate
from simulations.baseline import BaselineResult, pooled_baseline
from simulations.scenario import Scenario, load_simulated_institution

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class BackendSettings:
    """Where the simulated institutions run: a local Ray instance or an existing cluster."""

    ray_address: str | None = None
    num_cpus_per_institution: float = 1.0
    num_gpus_per_institution: float | None = None
    verbose: bool = False


@dataclass(frozen=True)
class SimulationOutcome:
    scenario: Scenario
    settings: FederationSettings
    result: RunResult
    baseline: BaselineResult | None
    wall_time_s: float


def prepare(scenario: Scenario, run_config: Mapping[str, Any]) -> FederationSettings:
    """The run's settings, translated once from ``run_config`` (kebab-case keys).

    Raises on a bad setting, and on a run no institution could train a single
    round of (an explicit noise multiplier whose first round already costs more
    than every budget), before anything starts.
    """
    merged = {**run_config, "min-institutions": scenario.num_institutions}
    merged.setdefault("seed", scenario.seed)
    settings = federation_settings_from_run_config(merged)
    schema = scenario.schema
    if settings.plan.model in IMAGE_MODELS and schema.image_shape is None:
        raise ConfigError(
            f"model {settings.plan.model!r} needs images; {scenario.name!r} is a table "
            "(use logreg or mlp)"
        )
    if settings.secagg is not None and scenario.num_institutions < settings.secagg.min_participants:
        raise TooFewParticipantsError(
            f"{scenario.num_institutions} institutions cannot run secure aggregation: a secure "
            f"sum needs at least {settings.secagg.min_participants} (min-secure-participants); "
            "add institutions or run --no-secagg",
            participants=scenario.num_institutions,
            minimum=settings.secagg.min_participants,
        )
    _check_budgets(scenario, settings)
    return settings


def _check_budgets(scenario: Scenario, settings: FederationSettings) -> None:
    plan = settings.plan
    if not plan.dp.enabled or plan.dp.noise_multiplier is None:
        return  # derived noise fits each budget by construction
    costs = {}
    for data in scenario.all_institutions():
        n = len(data.train)
        step = training_step(
            num_examples=n,
            sample_rate=plan.sample_rate,
            local_epochs=plan.local_epochs,
            noise_multiplier=plan.dp.noise_multiplier,
        )
        account = InstitutionAccount(
            institution=data.name,
            budget=PrivacyBudget(
                epsilon=scenario.budgets.get(data.name, scenario.budget.epsilon),
                delta=scenario.budget.delta,
            ),
            history=MemoryHistory(),
            accountant=plan.dp.accountant,
        )
        try:
            account.check([step])
        except BudgetExceededError as exc:
            costs[data.name] = (exc.epsilon_projected, exc.epsilon_budget)
    if len(costs) > scenario.num_institutions - 2:
        worst = min(costs.items(), key=lambda item: item[1][0])
        raise BudgetSpentError(
            f"with noise multiplier {plan.dp.noise_multiplier:g}, one round already costs more "
            f"than the budget of {len(costs)} of {scenario.num_institutions} institutions "
            f"(e.g. {worst[0]}: ε {worst[1][0]:.3g} > {worst[1][1]:g}); raise the noise or the "
            "budget",
            institutions=sorted(costs),
        )
    for name, (epsilon, budget) in costs.items():
        logger.warning(
            "%s cannot afford one round (ε %.3g > %g) and will refuse", name, epsilon, budget
        )


def simulate(
    scenario: Scenario,
    settings: FederationSettings,
    *,
    observers: Sequence[RunObserver] = (),
    backend: BackendSettings | None = None,
    baseline: bool = True,
    client_mods: Sequence[Mod] = (),
) -> SimulationOutcome:
    """Run ``scenario`` with ``settings`` (from ``prepare``); ``client_mods`` wrap every
    simulated node's app, outermost (they see what leaves a node)."""
    from flwr.simulation import run_simulation

    backend = backend or BackendSettings()
    began = time.perf_counter()
    results: list[RunResult] = []
    server_app = create_server_app(settings=settings, observers=list(observers), results=results)
    if settings.secagg is None and "allow-clear-evaluation" not in scenario.node_policy:
        # Without SecAgg+ the evaluation can only travel in the clear: in a simulation the
        # user is every party, and a run without secure aggregation is its choice.
        policy = {**scenario.node_policy, "allow-clear-evaluation": True}
        scenario = dataclasses.replace(scenario, node_policy=policy)
    client_app = create_client_app(
        data_loader=load_simulated_institution,
        node_config=scenario.node_config,
        extra_mods=client_mods,
    )
    notify_phase(observers, "start-up")
    fast_linkstate.install()  # Flower's messages found per node, not by checking all of them
    with _quiet_flower(backend.verbose):
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=scenario.num_institutions,
            backend_config=_backend_config(backend, scenario.num_institutions),
            verbose_logging=backend.verbose,
        )
    if not results:
        raise FederationError("the simulation ended without a result; see the log above")
    reference = None
    if baseline:
        notify_phase(observers, "baseline")
        reference = pooled_baseline(
            scenario.all_institutions(),
            model=settings.plan.model,
            hidden=settings.plan.hidden,
            seed=scenario.seed,
        )
    return SimulationOutcome(
        scenario=scenario,
        settings=settings,
        result=results[0],
        baseline=reference,
        wall_time_s=time.perf_counter() - began,
    )


def _backend_config(backend: BackendSettings, institutions: int) -> dict[str, Any]:
    gpus = backend.num_gpus_per_institution
    if gpus is None:
        gpus = 1.0 / min(institutions, 4) if torch.cuda.is_available() else 0.0
    init_args: dict[str, Any] = {"include_dashboard": False, "log_to_driver": backend.verbose}
    if backend.ray_address:
        # An existing cluster ("HOST:PORT" of its head, "auto", or "ray://HOST:PORT"):
        # Flower's Ray backend hands init_args to ray.init, which then brings no resources.
        init_args["address"] = backend.ray_address
    else:
        # "local": a fresh instance, even where RAY_ADDRESS names a cluster (ray.init
        # would otherwise connect to it and refuse the num_cpus below).
        init_args["address"] = "local"
        init_args["num_cpus"] = os.cpu_count() or 1
        if torch.cuda.is_available():
            init_args["num_gpus"] = torch.cuda.device_count()
    return {
        "client_resources": {"num_cpus": backend.num_cpus_per_institution, "num_gpus": gpus},
        "init_args": init_args,
    }


class _DropDeprecation(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "deprecated" not in record.getMessage().lower()


@contextmanager
def _quiet_flower(verbose: bool) -> Iterator[None]:
    """Keep Flower's own per-stage log lines out of the user's terminal unless asked."""
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    dropper = _DropDeprecation()
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    handlers = [*flwr_logger.handlers, *logging.getLogger().handlers]
    if not verbose:
        # run_simulation is called on purpose (it runs in-process, with our observers);
        # Flower's notice that `flwr run` is preferred is not the user's to act on.
        flwr_logger.setLevel(logging.WARNING)
        flwr_logger.addFilter(dropper)
        for handler in handlers:  # records of flwr's child loggers reach these unfiltered
            handler.addFilter(dropper)
    try:
        yield
    finally:
        flwr_logger.setLevel(level)
        flwr_logger.removeFilter(dropper)
        for handler in handlers:
            handler.removeFilter(dropper)
