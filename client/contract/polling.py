"""The poll seam into Flower: its SuperNode and ServerApp grid back off instead of sleeping 3 s.

Flower 1.41 waits a fixed ``time.sleep(3)`` in two loops that every SecAgg+ round
crosses five or six times:

- the SuperNode, after a pull that brought no message
  (``flwr.supernode.start_client_internal.start_client_internal``);
- the ServerApp's grid, between pulls of the replies it waits for
  (``flwr.superlink.grid.http_grid.HttpGrid.send_and_receive``).

No flag changes either (1.41, 1.42, the nightly). A third loop, the SuperExec's task
poll (``flwr.supercore.superexec.run_superexec.run_superexec``, a fixed
``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``), runs beside every SuperNode and SuperLink
that fedwarden starts: polled every 50 ms it kept two cores a quarter busy with
requests that found nothing.

This module is the seam: it
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
  coordinator whose SuperLink runs with ``--isolation process``;
- ``python -m client.warm_exec``: the node's ClientApp executor.

``install_superexec_poll`` backs off the SuperExec's task poll the same way (reset
when a task is launched). On a node it also listens on a ``WakeChannel``, a FIFO in
the node's state folder that its SuperNode writes a byte to whenever it stores a
message: the executor then asks for the task at once instead of at its next poll,
and can poll slowly (up to ``max_s``) while nothing happens. A wake that is lost
costs at most one back-off interval.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import importlib
import inspect
import math
import os
import select
import stat
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
"""How often Flower's SuperNode looks for its ClientApp's reply (shortened to ``REPLY_POLL_S``)."""
REPLY_POLL_S = 0.01
"""The SuperNode's look for its ClientApp's reply (and its objects) is a read of its own
in-memory state: every 10 ms costs nothing, and a stage no longer waits 25 ms on average."""
GRID_MODULE = "flwr.superlink.grid.http_grid"
GRID_CLASS = "HttpGrid"
GRID_LOOP = "send_and_receive"
FIXED_SLEEP = f"time.sleep({FLOWER_SLEEP_S})"
PULL_MODULE = "flwr.supercore.inflatable.inflatable_utils"
PULL_FUNCTIONS = ("pull_objects", "pull_and_inflate_object_from_tree")
FLOWER_PULL_BACKOFF = {"initial_backoff": 1, "backoff_cap": 10}
"""Flower 1.41's wait before pulling a message's object again: 1 s, doubling up to 10 s."""
PULL_BACKOFF = {"initial_backoff": 0.05, "backoff_cap": 1.0}
"""fedwarden's: 50 ms, doubling up to 1 s."""
SUPEREXEC_MODULE = "flwr.supercore.superexec.run_superexec"
SUPEREXEC_LOOP = "run_superexec"
TASK_SLEEP = "time.sleep(task_poll_interval)"
"""The SuperExec loop's only sleep: between two task polls."""


@dataclass(frozen=True, kw_only=True)
class PollSettings:
    """How long a hooked loop waits while idle: ``first_s``, doubling up to ``max_s``.

    For ``busy_s`` after the last activity (a message pulled, an exchange begun, a task
    launched) the intervals stop growing at ``busy_max_s``: within a run the next
    message is seconds away, and a 1 s poll would add half a second to every SecAgg+
    stage; a node idle for longer polls at most once every ``max_s``.
    """

    first_s: float = 0.05
    max_s: float = 1.0
    busy_max_s: float = 0.2
    busy_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.first_s <= self.max_s:
            raise ValueError(
                f"poll intervals must satisfy 0 < first ({self.first_s}) <= max ({self.max_s})"
            )
        if self.busy_max_s <= 0 or self.busy_s < 0:
            raise ValueError(
                f"poll intervals must satisfy busy max ({self.busy_max_s}) > 0 "
                f"and busy window ({self.busy_s}) >= 0"
            )


class BackoffClock:
    """Stands in for the ``time`` module inside one Flower module.

    ``sleep(FLOWER_SLEEP_S)`` sleeps the next back-off interval, a sleep listed in
    ``shorten`` sleeps ``shortened_s`` (default ``first_s``); any other ``sleep`` and
    every other attribute are the real ``time``'s.
    """

    def __init__(
        self,
        settings: PollSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        shorten: tuple[float, ...] = (),
        shortened_s: float | None = None,
        backoff_on: float | None = FLOWER_SLEEP_S,
    ) -> None:
        self.settings = settings
        self._sleep = sleep
        self._shorten = shorten
        self._shortened_s = settings.first_s if shortened_s is None else shortened_s
        self._backoff_on = backoff_on
        """The sleep that backs off; ``None``: every sleep (a loop with one sleep only)."""
        self._next_s = settings.first_s
        self._active_at = -math.inf
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def next_interval(self) -> float:
        """The interval to wait now; the one after it is twice as long, up to ``max_s``
        (``busy_max_s`` within ``busy_s`` of the last ``reset``)."""
        settings = self.settings
        with self._lock:
            busy = time.monotonic() - self._active_at < settings.busy_s
            cap = min(settings.busy_max_s, settings.max_s) if busy else settings.max_s
            interval = min(self._next_s, cap)
            self._next_s = min(interval * 2, cap)
            return interval

    def reset(self) -> None:
        """Something happened: the next wait is short again."""
        with self._lock:
            self._next_s = self.settings.first_s
            self._active_at = time.monotonic()

    def sleep(self, seconds: float) -> None:
        if self._backoff_on is None or seconds == self._backoff_on:
            self._sleep(self.next_interval())
        elif seconds in self._shorten:
            self._sleep(self._shortened_s)
        else:
            self._sleep(seconds)


class WakeChannel:
    """A FIFO through which one local process wakes another's poll at once.

    Both ends open it read-write and non-blocking (Linux), so neither waits for the
    other to exist; the FIFO is created ``0600`` if missing. ``notify`` never blocks
    (a full pipe already holds a wake); ``wait`` returns early, draining it, when a
    wake is there. Nothing but the fact of a wake crosses it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        with contextlib.suppress(FileExistsError):
            os.mkfifo(self.path, 0o600)
        if not stat.S_ISFIFO(os.stat(self.path).st_mode):
            raise ValueError(f"{self.path} exists and is not a FIFO")
        self._fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)

    def fileno(self) -> int:
        return self._fd

    def notify(self) -> None:
        try:
            os.write(self._fd, b"!")
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s``; ``True`` (at once) if woken."""
        ready, _, _ = select.select([self._fd], [], [], timeout_s)
        if not ready:
            return False
        with contextlib.suppress(BlockingIOError):
            while os.read(self._fd, 4096):
                pass
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def _hooked(
    module_name: str, owner: str | None, function: str, sleep: str = FIXED_SLEEP
) -> tuple[ModuleType, Any]:
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
    if sleep not in source or getattr(module, "time", None) is None:
        raise FlowerSeamError(
            f"Flower {version}'s {module_name}.{function} no longer calls {sleep} "
            f"through its module's `time` (the poll seam was pinned to Flower {PINNED_FLOWER}x)",
            flower=version,
        )
    return module, holder


def install_supernode_poll(
    settings: PollSettings, *, wake: WakeChannel | None = None
) -> BackoffClock:
    """Back off the SuperNode's idle poll; a pulled message resets it (and notifies ``wake``,
    the executor's channel); its 0.5 s wait for the ClientApp's reply becomes
    ``REPLY_POLL_S`` (or ``first_s`` if shorter). Returns the clock."""
    module, _ = _hooked(SUPERNODE_MODULE, None, SUPERNODE_LOOP)
    pull = getattr(module, SUPERNODE_PULL, None)
    push = getattr(module, SUPERNODE_PUSH, None)
    if pull is None or push is None or REPLY_WAIT not in inspect.getsource(push):
        raise FlowerSeamError(
            f"{SUPERNODE_MODULE} has no {SUPERNODE_PULL}, or no {SUPERNODE_PUSH} waiting with "
            f"{REPLY_WAIT} (the poll seam was pinned to Flower {PINNED_FLOWER}x)"
        )
    clock = BackoffClock(settings, shorten=(0.5,), shortened_s=min(REPLY_POLL_S, settings.first_s))

    @functools.wraps(pull)
    def pull_and_reset(*args: Any, **kwargs: Any) -> Any:
        run_id = pull(*args, **kwargs)
        if run_id is not None:
            clock.reset()
            if wake is not None:
                wake.notify()
        return run_id

    module.time = clock  # type: ignore[attr-defined]
    setattr(module, SUPERNODE_PULL, pull_and_reset)
    return clock


WAKE_SETTLE_S = 0.02
"""After a wake, how long the waker must stay quiet before the wait ends: a reply is
its message and then its objects, pushed one request at a time."""
WAKE_SETTLE_MAX_S = 0.1


def settling_sleep(
    wake: WakeChannel, *, settle_s: float = WAKE_SETTLE_S, settle_max_s: float = WAKE_SETTLE_MAX_S
) -> Callable[[float], None]:
    """A ``sleep`` that a wake ends early, once wakes have stopped for ``settle_s`` (or
    ``settle_max_s`` after the first)."""

    def sleep(seconds: float) -> None:
        if not wake.wait(seconds):
            return
        deadline = time.monotonic() + settle_max_s
        while (left := deadline - time.monotonic()) > 0 and wake.wait(min(settle_s, left)):
            pass

    return sleep


def install_grid_poll(settings: PollSettings, *, wake: WakeChannel | None = None) -> BackoffClock:
    """Back off the ServerApp grid's reply poll; each exchange starts short; with ``wake``
    (written by the SuperLink when a node pushes a reply) a wait ends once the reply is
    in. Returns the clock."""
    module, grid_class = _hooked(GRID_MODULE, GRID_CLASS, GRID_LOOP)
    clock = BackoffClock(settings) if wake is None else BackoffClock(
        settings, sleep=settling_sleep(wake)
    )
    exchange = getattr(grid_class, GRID_LOOP)

    @functools.wraps(exchange)
    def send_and_receive(self: Any, *args: Any, **kwargs: Any) -> Any:
        clock.reset()
        return exchange(self, *args, **kwargs)

    module.time = clock  # type: ignore[attr-defined]
    setattr(grid_class, GRID_LOOP, send_and_receive)
    return clock


def install_superexec_poll(
    settings: PollSettings, *, wake: WakeChannel | None = None
) -> BackoffClock:
    """Back off the SuperExec's task poll (``reset`` it when a task is launched); with
    ``wake``, a wake ends the wait at once. Returns the clock."""
    module, _ = _hooked(SUPEREXEC_MODULE, None, SUPEREXEC_LOOP, TASK_SLEEP)
    clock: BackoffClock

    def sleep(seconds: float) -> None:
        if wake is not None and wake.wait(seconds):
            clock.reset()
        elif wake is None:
            time.sleep(seconds)

    clock = BackoffClock(settings, sleep=sleep, backoff_on=None)
    module.time = clock  # type: ignore[attr-defined]
    return clock


def install_object_pull_backoff() -> None:
    """Retry a message's objects after 50 ms (doubling to 1 s), not after 1 s (doubling to 10 s).

    A message's objects arrive after the message itself, so its receiver often asks
    for one that is not there yet, and Flower waits a whole second before it asks
    again: the SuperNode pulling from the SuperLink, the ClientApp from its SuperNode
    (its task is created before the objects are stored) and the ServerApp pulling the
    replies, up to three seconds a SecAgg+ stage. Every Flower caller takes the
    functions' keyword defaults, so the seam sets those (``PULL_BACKOFF``), after
    checking they are still Flower 1.41's (``FlowerSeamError`` otherwise).
    """
    module = importlib.import_module(PULL_MODULE)
    for name in PULL_FUNCTIONS:
        function = getattr(module, name, None)
        defaults = getattr(function, "__kwdefaults__", None) or {}
        current = {key: defaults.get(key) for key in FLOWER_PULL_BACKOFF}
        if current not in (FLOWER_PULL_BACKOFF, PULL_BACKOFF):
            raise FlowerSeamError(
                f"{PULL_MODULE}.{name} no longer takes {FLOWER_PULL_BACKOFF} as keyword "
                f"defaults (found {current}; the pull seam was pinned to Flower {PINNED_FLOWER}x)"
            )
        defaults.update(PULL_BACKOFF)


def add_poll_args(parser: argparse.ArgumentParser) -> None:
    """``--poll-first-s`` and ``--poll-max-s``."""
    defaults = PollSettings()
    parser.add_argument("--poll-first-s", type=float, default=defaults.first_s)
    parser.add_argument("--poll-max-s", type=float, default=defaults.max_s)
    parser.add_argument("--poll-busy-max-s", type=float, default=defaults.busy_max_s)


def poll_settings(args: argparse.Namespace) -> PollSettings:
    return PollSettings(
        first_s=args.poll_first_s, max_s=args.poll_max_s, busy_max_s=args.poll_busy_max_s
    )
