"""The institution's Flower ClientApp.

``app`` is what ``flwr run`` and a SuperNode load (``client.app:app``): it reads
the institution's data and settings from the node config. ``create_client_app``
builds the same app over another data loader (the simulation's partitions).

With a history file (node config ``history-path``) a run continues the
institution's history: its derived noise spends the run's ε on top of what
earlier runs spent, never past the budget (``ContinuingClient``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from flwr.app import Context
from flwr.client import Client, ClientApp
from flwr.clientapp.typing import Mod

from client.contract.plan import TrainingPlan
from client.data import DataLoaderFn, InstitutionData, load_node_data
from client.flower_client import InstitutionClient
from client.history import (
    FileHistory,
    StateHistory,
    continuing_noise_multiplier,
    steps_before_run,
)
from client.mods import release_manifest_mod, secure_aggregation_mod_for, update_guard_mod
from client.node import NodeSettings
from client.secagg_guard import secagg_guard_mod_for
from privacy.account import HistoryStore
from privacy.accounting import AccountingStep
from privacy.redaction import install_log_redaction
from privacy.sampling import effective_sample_rate, steps_per_epoch

logger = logging.getLogger(__name__)


NodeConfigFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]
"""Completes a node's config (the simulation adds each institution's budget and seed)."""


def create_client_app(
    data_loader: DataLoaderFn = load_node_data,
    node_config: NodeConfigFn | None = None,
    *,
    extra_mods: Sequence[Mod] = (),
) -> ClientApp:
    """A ClientApp whose institutions get their rows from ``data_loader``.

    ``node_config`` completes what Flower passes as the node's config before the
    settings and the data are read. Rows are loaded and validated once per node
    config and process, not per message. ``extra_mods`` go outermost: they see what
    leaves the node (a test's recorder).
    """

    install_log_redaction()  # the ClientApp process logs no key, token or password
    load = _CachingLoader(data_loader)

    def client_fn(context: Context) -> Client:
        config = node_config(context.node_config) if node_config else context.node_config
        settings = NodeSettings.from_node_config(config)
        torch.set_num_threads(settings.torch_threads)
        data = load(config)
        if settings.history_path is None:
            history: HistoryStore = StateHistory(context.state)
            return InstitutionClient(
                data=data, settings=settings, history=history, state=context.state
            ).to_client()
        history = FileHistory(settings.history_path)
        return ContinuingClient(
            data=data,
            settings=settings,
            history=history,
            state=context.state,
            prior=steps_before_run(history, context.state),
        ).to_client()

    return ClientApp(
        client_fn=client_fn,
        mods=[
            *extra_mods,
            secagg_guard_mod_for(node_config),
            secure_aggregation_mod_for(node_config),
            update_guard_mod,
            release_manifest_mod,
        ],
    )


class ContinuingClient(InstitutionClient):
    """An institution whose run continues a kept history.

    Its derived noise spends the run's ε (the plan's target, else the budget) on
    top of ``prior``, what the history held when the run began, and never past
    the budget. When too little budget is left, the noise is the run's as if
    nothing had been spent, and the budget check refuses every round.
    """

    def __init__(self, *, prior: list[AccountingStep], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prior = tuple(prior)

    def _noise_multiplier(self, plan: TrainingPlan, num_examples: int) -> float:
        if plan.dp.noise_multiplier is not None or not self.prior:
            return super()._noise_multiplier(plan, num_examples)
        budget = self.settings.budget
        sigma = continuing_noise_multiplier(
            prior=self.prior,
            run_epsilon=min(plan.dp.target_epsilon or budget.epsilon, budget.epsilon),
            budget_epsilon=budget.epsilon,
            target_delta=budget.delta,
            sample_rate=effective_sample_rate(num_examples, plan.sample_rate),
            steps=plan.num_rounds
            * plan.local_epochs
            * steps_per_epoch(num_examples, plan.sample_rate),
            accountant=plan.dp.accountant,
            reserved=tuple(
                AccountingStep(noise_multiplier=sigma, sample_rate=1.0, steps=1)
                for sigma in self._run_releases(plan)
            ),
        )
        return sigma if sigma is not None else super()._noise_multiplier(plan, num_examples)


class _CachingLoader:
    """Loads each node config's data once per process; picklable (Ray ships the app)."""

    def __init__(self, loader: DataLoaderFn) -> None:
        self.loader = loader
        self._cache: dict[tuple[tuple[str, Any], ...], InstitutionData] = {}

    def __call__(self, node_config: Mapping[str, Any]) -> InstitutionData:
        key = tuple(sorted(node_config.items()))
        if key not in self._cache:
            self._cache[key] = self.loader(node_config)
        return self._cache[key]

    def __getstate__(self) -> dict[str, Any]:
        return {"loader": self.loader, "_cache": {}}


app = create_client_app()
