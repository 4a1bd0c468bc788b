"""Child processes a foreground command owns: started together, stopped together.

``fedwarden client join`` and ``fedwarden coordinator start`` run Flower's
own programs as children, pass their output through line by line (so it can be
watched for events), and on Ctrl-C or SIGTERM stop every child: SIGTERM first,
SIGKILL after ``stop_timeout_s``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO

from privacy.errors import ConfigError

logger = logging.getLogger(__name__)

LineHandler = Callable[[str], None]


class ProcessGroup:
    """Children started with ``start``; ``wait`` blocks until one leaves or a signal comes."""

    def __init__(self, *, stop_timeout_s: float = 10.0, out: TextIO | None = None) -> None:
        self.stop_timeout_s = stop_timeout_s
        self.out = out if out is not None else sys.stdout
        self.children: list[subprocess.Popen[str]] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_path: Path | None = None,
        on_line: LineHandler | None = None,
    ) -> subprocess.Popen[str]:
        """Start ``argv``; its output goes to our output (and ``log_path``), line by line."""
        child = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self.children.append(child)
        thread = threading.Thread(target=self._pump, args=(child, log_path, on_line), daemon=True)
        thread.start()
        self._threads.append(thread)
        return child

    def _pump(
        self, child: subprocess.Popen[str], log_path: Path | None, on_line: LineHandler | None
    ) -> None:
        assert child.stdout is not None
        log = log_path.open("a", encoding="utf-8") if log_path is not None else None
        try:
            for line in child.stdout:
                with self._lock:
                    self.out.write(line)
                    self.out.flush()
                if log is not None:
                    log.write(line)
                    log.flush()
                if on_line is not None:
                    try:
                        on_line(line)
                    except Exception:  # a watcher's failure must not stop the pump
                        logger.exception("handling a child's output line failed")
        finally:
            if log is not None:
                log.close()

    def wait(self) -> int:
        """Block until a child exits or SIGINT/SIGTERM arrives; stop all; the first exit code."""
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self._stopping.set()

        for signum in previous:
            signal.signal(signum, on_signal)
        try:
            code: int | None = None
            while code is None and not self._stopping.is_set():
                for child in self.children:
                    if child.poll() is not None:
                        code = child.returncode
                        break
                else:
                    self._stopping.wait(0.5)
            if code is None:
                return 0
            # A child killed by signal N reports -N; a shell reports 128 + N.
            return 128 - code if code < 0 else code
        finally:
            self.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    @property
    def signalled(self) -> bool:
        """Whether ``wait`` ended because this process got SIGINT or SIGTERM."""
        return self._stopping.is_set()

    def stop(self) -> None:
        """SIGTERM every child still running, SIGKILL those still there after the timeout."""
        for child in self.children:
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + self.stop_timeout_s
        for child in self.children:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("process %d did not stop in time: killing it", child.pid)
                child.kill()
                child.wait()
        for thread in self._threads:
            thread.join(timeout=2.0)


def executable(name: str) -> str:
    """The path of a program installed beside this Python (the venv's ``bin``)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"`{name}` is not installed here (it comes with flwr)")
    return found


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment plus ``extra``."""
    return {**os.environ, **extra}
