"""The poll seam into Flower: its SuperNode and ServerApp grid back off instead of sleeping 3 s.

Flower 1.41 waits a fixed ``time.sleep(3)`` in two loops that every SecAgg+ round
crosses five or six times:

- the SuperNode, after a pull that brought no message
  (``flwr.supernode.start_client_internal.start_client_internal``);
- the ServerApp's grid, between pulls of the replies it waits for
  (``flwr.superlink.grid.http_grid.HttpGrid.send_and_receive``).

No flag changes either (1.41, 1.42, the nightly). This module is the seam: it
replaces the name ``time`` *in those two Flower modules only* with a
``BackoffClock`` whose ``sleep(3)`` waits 50 ms, then 100 ms, doubling up to
1 s while nothing happens, and starts again at 50 ms on activity (a message
pulled by the SuperNode; each new ``send_and_receive`` of the grid). Every other
``time`` call goes to the real module. The code that runs is Flower's, unchanged.

The seam is pinned: ``install_supernode_poll`` and ``install_grid_poll`` check
that the hooked function still exists and still contains the sleep they
replace, and raise ``FlowerSeamError`` otherwise (``tests/client/contract/test_polling.py``
fails loudly on a Flower upgrade that moves them). It lives beside the contract
(no torch) because both sides use it; fedwarden runs it through its own entry points:

- ``python -m client.fast_poll [FLOWER-SUPERNODE ARGS]``: ``flower-supernode`` with
  the seam (what ``fedwarden client join`` starts);
- ``python -m server.engine.fast_serverapp``: the ServerApp executor of a
  coordinator whose SuperLink runs with ``--isolation process``.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from client.contract.errors import FlowerSeamError

PINNED_FLOWER = "1.41."
"""The Flower release whose sources the seams were read against."""

FLOWER_SLEEP_S = 3
"""The fixed sleep Flower 1.41 pays in both loops."""

SUPERNODE_MODULE = "flwr.supernode.start_client_internal"
SUPERNODE_LOOP = "start_client_internal"
SUPERNODE_PULL = "_pull_and_store_message"
SUPERNODE_PUSH = "_push_messages"
REPLY_WAIT = "time.sleep(0.5)"
"""How often Flower's SuperNode looks for its ClientApp's reply (shortened to ``first_s``)."""
GRID_MODULE = "flwr.superlink.grid.http_grid"
GRID_CLASS = "HttpGrid"
GRID_LOOP = "send_and_receive"
FIXED_SLEEP = f"time.sleep({FLOWER_SLEEP_S})"


@dataclass(frozen=True, kw_only=True)
class PollSettings:
    """How long a hooked loop waits while idle: ``first_s``, doubling up to ``max_s``."""

    first_s: float = 0.05
    max_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.first_s <= self.max_s:
            raise ValueError(
                f"poll intervals must satisfy 0 < first ({self.first_s}) <= max ({self.max_s})"
            )


class BackoffClock:
    """Stands in for the ``time`` module inside one Flower module.

    ``sleep(FLOWER_SLEEP_S)`` sleeps the next back-off interval, a sleep listed in
    ``shorten`` sleeps ``first_s``; any other ``sleep`` and every other attribute are
    the real ``time``'s.
    """

    def __init__(
        self,
        settings: PollSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        shorten: tuple[float, ...] = (),
    ) -> None:
        self.settings = settings
        self._sleep = sleep
        self._shorten = shorten
        self._next_s = settings.first_s
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def next_interval(self) -> float:
        """The interval to wait now; the one after it is twice as long, up to ``max_s``."""
        with self._lock:
            interval = self._next_s
            self._next_s = min(interval * 2, self.settings.max_s)
            return interval

    def reset(self) -> None:
        """Something happened: the next wait is short again."""
        with self._lock:
            self._next_s = self.settings.first_s

    def sleep(self, seconds: float) -> None:
        if seconds == FLOWER_SLEEP_S:
            self._sleep(self.next_interval())
        elif seconds in self._shorten:
            self._sleep(self.settings.first_s)
        else:
            self._sleep(seconds)


def _hooked(module_name: str, owner: str | None, function: str) -> tuple[ModuleType, Any]:
    """The module and the function to hook; ``FlowerSeamError`` unless both are as pinned."""
    import flwr

    version = getattr(flwr, "__version__", "?")
    try:
        module = importlib.import_module(module_name)
        holder: Any = getattr(module, owner) if owner else module
        target = getattr(holder, function)
        source = inspect.getsource(target)
    except (ImportError, AttributeError, OSError, TypeError) as exc:
        raise FlowerSeamError(
            f"Flower {version} has no {module_name}.{owner + '.' if owner else ''}{function} "
            f"(the poll seam was pinned to Flower {PINNED_FLOWER}x): {exc}",
            flower=version,
        ) from exc
    if FIXED_SLEEP not in source or getattr(module, "time", None) is None:
        raise FlowerSeamError(
            f"Flower {version}'s {module_name}.{function} no longer calls {FIXED_SLEEP} "
            f"through its module's `time` (the poll seam was pinned to Flower {PINNED_FLOWER}x)",
            flower=version,
        )
    return module, holder


def install_supernode_poll(settings: PollSettings) -> BackoffClock:
    """Back off the SuperNode's idle poll; a pulled message resets it; its 0.5 s wait for the
    ClientApp's reply becomes ``first_s``. Returns the clock."""
    module, _ = _hooked(SUPERNODE_MODULE, None, SUPERNODE_LOOP)
    pull = getattr(module, SUPERNODE_PULL, None)
    push = getattr(module, SUPERNODE_PUSH, None)
    if pull is None or push is None or REPLY_WAIT not in inspect.getsource(push):
        raise FlowerSeamError(
            f"{SUPERNODE_MODULE} has no {SUPERNODE_PULL}, or no {SUPERNODE_PUSH} waiting with "
            f"{REPLY_WAIT} (the poll seam was pinned to Flower {PINNED_FLOWER}x)"
        )
    clock = BackoffClock(settings, shorten=(0.5,))

    @functools.wraps(pull)
    def pull_and_reset(*args: Any, **kwargs: Any) -> Any:
        run_id = pull(*args, **kwargs)
        if run_id is not None:
            clock.reset()
        return run_id

    module.time = clock  # type: ignore[attr-defined]
    setattr(module, SUPERNODE_PULL, pull_and_reset)
    return clock


def install_grid_poll(settings: PollSettings) -> BackoffClock:
    """Back off the ServerApp grid's reply poll; each exchange starts short. Returns the clock."""
    module, grid_class = _hooked(GRID_MODULE, GRID_CLASS, GRID_LOOP)
    clock = BackoffClock(settings)
    exchange = getattr(grid_class, GRID_LOOP)

    @functools.wraps(exchange)
    def send_and_receive(self: Any, *args: Any, **kwargs: Any) -> Any:
        clock.reset()
        return exchange(self, *args, **kwargs)

    module.time = clock  # type: ignore[attr-defined]
    setattr(grid_class, GRID_LOOP, send_and_receive)
    return clock


def add_poll_args(parser: argparse.ArgumentParser) -> None:
    """``--poll-first-s`` and ``--poll-max-s``."""
    defaults = PollSettings()
    parser.add_argument("--poll-first-s", type=float, default=defaults.first_s)
    parser.add_argument("--poll-max-s", type=float, default=defaults.max_s)


def poll_settings(args: argparse.Namespace) -> PollSettings:
    return PollSettings(first_s=args.poll_first_s, max_s=args.poll_max_s)
