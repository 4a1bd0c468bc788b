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
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import Context
from flwr.client import Client, ClientApp
from flwr.clientapp.typing import Mod

from client.data import (
    DataLoaderFn,
    InstitutionData,
    check_data_unchanged,
    data_fingerprint,
    load_node_data,
)
from client.flower_client import InstitutionClient
from client.history import (
    FileHistory,
    StateHistory,
    steps_before_run,
    use_accounting_cache,
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

    Flower's simulation engine pickles the app with every message it sends a Ray
    actor; this one pickles as its recipe, and each actor process builds it (and
    loads its rows) once.
    """
    recipe = _Recipe(
        token=uuid.uuid4().hex,
        data_loader=data_loader,
        node_config=node_config,
        extra_mods=tuple(extra_mods),
    )
    return _remember(recipe.token, _build_client_app(recipe))


@dataclass(frozen=True)
class _Recipe:
    token: str
    data_loader: DataLoaderFn
    node_config: NodeConfigFn | None
    extra_mods: tuple[Mod, ...]


_BUILT: dict[str, ClientApp] = {}
"""This process's apps by recipe token (a Ray actor's, built on their first message)."""

_KEEP_BUILT = 8


def _rebuilt_client_app(recipe: _Recipe) -> ClientApp:
    """The app of ``recipe``, built once in this process (what unpickling calls)."""
    app = _BUILT.get(recipe.token)
    return app if app is not None else _remember(recipe.token, _build_client_app(recipe))


def _remember(token: str, app: ClientApp) -> ClientApp:
    _BUILT[token] = app
    while len(_BUILT) > _KEEP_BUILT:
        del _BUILT[next(iter(_BUILT))]
    return app


class _RecipeClientApp(ClientApp):
    """A ClientApp that pickles as its recipe (see ``create_client_app``)."""

    def __init__(self, recipe: _Recipe, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.recipe = recipe

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuilt_client_app, (self.recipe,))


def _build_client_app(recipe: _Recipe) -> ClientApp:
    install_log_redaction()  # the ClientApp process logs no key, token or password
    load = _CachingLoader(recipe.data_loader)
    node_config = recipe.node_config

    def client_fn(context: Context) -> Client:
        config = node_config(context.node_config) if node_config else context.node_config
        settings = NodeSettings.from_node_config(config)
        torch.set_num_threads(settings.torch_threads)
        data = load(config)
        check_data_unchanged(context.state, name=data.name, fingerprint=load.fingerprint(config))
        if settings.history_path is None:
            history: HistoryStore = StateHistory(context.state)
            return InstitutionClient(
                data=data, settings=settings, history=history, state=context.state
            ).to_client()
        use_accounting_cache(settings.history_path)
        history = FileHistory(settings.history_path)
        return InstitutionClient(
            data=data,
            settings=settings,
            history=history,
            state=context.state,
            prior=steps_before_run(history, context.state),
        ).to_client()

    return _RecipeClientApp(
        recipe,
        client_fn=client_fn,
        mods=[
            *recipe.extra_mods,
            secagg_guard_mod_for(node_config),
            secure_aggregation_mod_for(node_config),
            update_guard_mod,
            release_manifest_mod,
        ],
    )


class _CachingLoader:
    """Loads each node config's data once per app, with its fingerprint (the app itself
    travels as its recipe, so the loader is never pickled)."""

    def __init__(self, loader: DataLoaderFn) -> None:
        self.loader = loader
        self._cache: dict[tuple[tuple[str, Any], ...], tuple[InstitutionData, str]] = {}

    def _entry(self, node_config: Mapping[str, Any]) -> tuple[InstitutionData, str]:
        key = tuple(sorted(node_config.items()))
        if key not in self._cache:
            data = self.loader(node_config)
            self._cache[key] = (data, data_fingerprint(data))
        return self._cache[key]

    def __call__(self, node_config: Mapping[str, Any]) -> InstitutionData:
        return self._entry(node_config)[0]

    def fingerprint(self, node_config: Mapping[str, Any]) -> str:
        return self._entry(node_config)[1]


app = create_client_app()
