"""The institution's Flower ClientApp.

``app`` is what ``flwr run`` and a SuperNode load (``client.app:app``): it reads
the institution's data and settings from the node config. ``create_client_app``
builds the same app over another data loader (the simulation's partitions).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
from flwr.app import Context
from flwr.client import Client, ClientApp

from client.data import DataLoaderFn, InstitutionData, load_node_data
from client.flower_client import InstitutionClient
from client.history import FileHistory, HistoryStore, StateHistory
from client.mods import secure_aggregation_mod_for, update_guard_mod
from client.node import NodeSettings
from privacy.redaction import install_log_redaction

logger = logging.getLogger(__name__)


NodeConfigFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]
"""Completes a node's config (the simulation adds each institution's budget and seed)."""


def create_client_app(
    data_loader: DataLoaderFn = load_node_data, node_config: NodeConfigFn | None = None
) -> ClientApp:
    """A ClientApp whose institutions get their rows from ``data_loader``.

    ``node_config`` completes what Flower passes as the node's config before the
    settings and the data are read. Rows are loaded and validated once per node
    config and process, not per message.
    """

    install_log_redaction()  # the ClientApp process logs no key, token or password
    load = _CachingLoader(data_loader)

    def client_fn(context: Context) -> Client:
        config = node_config(context.node_config) if node_config else context.node_config
        settings = NodeSettings.from_node_config(config)
        torch.set_num_threads(settings.torch_threads)
        history: HistoryStore = (
            FileHistory(settings.history_path)
            if settings.history_path is not None
            else StateHistory(context.state)
        )
        data = load(config)
        return InstitutionClient(data=data, settings=settings, history=history).to_client()

    return ClientApp(
        client_fn=client_fn, mods=[secure_aggregation_mod_for(node_config), update_guard_mod]
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
