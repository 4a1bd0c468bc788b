"""The institution's Flower ClientApp.

``app`` is what ``flwr run`` and a SuperNode load (``client.app:app``): it reads
the institution's data and settings from the node config. ``create_client_app``
builds the same app over another data loader (the simulation's partitions).

With a history file (node config ``history-path``) a run continues the
institution's history: its derived noise spends the run's ε on top of what
earlier runs spent, never past the budget (``InstitutionClient``'s ``prior``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from flwr.app import Context
from flwr.client import Client, ClientApp
from flwr.clientapp.typing import Mod

from client.data import DataLoaderFn, InstitutionData, load_node_data
from client.flower_client import InstitutionClient
from client.history import (
    FileHistory,
    StateHistory,
    steps_before_run,
)
from client.mods import release_manifest_mod, secure_aggregation_mod_for, update_guard_mod
from client.node import NodeSettings
from client.secagg_guard import secagg_guard_mod_for
from privacy.account import HistoryStore
from privacy.redaction import install_log_redaction

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
        return InstitutionClient(
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
