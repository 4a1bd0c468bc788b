"""Work a ClientApp task leaves for after its reply has gone: never on the reply's path.

A deployed node runs each task in a process of its own (``client.warm_exec`` forks one
per message) that ends once its reply is sent. Some work is worth doing before the next
message but is not part of this reply: the ε of the round after next, which the next
training message will need and which costs about half a second of PRV accounting. A task
asks for it with ``after_reply``; the warm executor's child runs what was asked (bounded
by ``DEFERRED_LIMIT_S``) after Flower's ClientApp entry returns, that is after the reply
was pushed, while the federation works on other stages.

Only a process that ``enable``-d it runs deferred work (the warm executor's child). Under
the simulation engine, or Flower's own executor, ``after_reply`` forgets what it is given:
the work is then done when it is needed, as before. Deferred work may only fill caches
(values that are pure functions of their inputs): nothing that decides, sends or records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

DEFERRED_LIMIT_S = 30.0
"""How long a child may spend on deferred work after its reply (then it leaves)."""

_queue: list[tuple[str, Callable[[], object]]] = []
_enabled: list[bool] = []  # non-empty once ``enable`` was called in this process


def enable() -> None:
    """Run deferred work in this process (``run_deferred``); call it in a task's process."""
    _enabled.append(True)


def after_reply(what: str, work: Callable[[], object]) -> None:
    """Do ``work`` (named ``what`` in logs) once this task's reply is sent, where enabled."""
    if _enabled:
        _queue.append((what, work))


def run_deferred(*, limit_s: float = DEFERRED_LIMIT_S) -> int:
    """Run the deferred work in order, starting none after ``limit_s`` (what is left is
    dropped); how many ran. A failure is logged and skipped (what it would have cached is
    computed when needed)."""
    began = time.monotonic()
    done = 0
    while _queue and time.monotonic() - began < limit_s:
        what, work = _queue.pop(0)
        try:
            work()
            done += 1
        except Exception:  # a cache left cold costs time, not correctness
            logger.warning("deferred %s failed; it will be computed when needed", what,
                           exc_info=True)  # fmt: skip
    _queue.clear()
    return done
