"""Children of a foreground command: their output is watched, and they stop together."""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
import time

import pytest

from client.contract.processes import ProcessGroup


def test_output_is_passed_through_logged_and_watched(tmp_path):
    out, seen = io.StringIO(), []
    group = ProcessGroup(out=out)

    group.start(
        [sys.executable, "-c", "print('hello'); print('refused: key')"],
        log_path=tmp_path / "child.log",
        on_line=seen.append,
    )
    code = group.wait()

    assert code == 0
    assert seen == ["hello\n", "refused: key\n"]
    assert out.getvalue() == (tmp_path / "child.log").read_text() == "hello\nrefused: key\n"


def test_when_one_child_ends_the_others_are_stopped():
    group = ProcessGroup(out=io.StringIO(), stop_timeout_s=5)
    sleeper = group.start([sys.executable, "-c", "import time; time.sleep(60)"])
    group.start([sys.executable, "-c", "raise SystemExit(3)"])

    started = time.monotonic()
    code = group.wait()

    assert code == 3
    assert sleeper.poll() is not None
    assert time.monotonic() - started < 30


def test_a_child_that_ignores_sigterm_is_killed_after_the_timeout():
    group = ProcessGroup(out=io.StringIO(), stop_timeout_s=1)
    stubborn = group.start(
        [sys.executable, "-c",
         "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "print('ready', flush=True); time.sleep(60)"],
    )  # fmt: skip
    time.sleep(1.0)

    group.stop()

    assert stubborn.returncode == -signal.SIGKILL


def test_sigterm_to_the_command_stops_its_children():
    group = ProcessGroup(out=io.StringIO(), stop_timeout_s=5)
    child = group.start([sys.executable, "-c", "import time; time.sleep(60)"])
    threading.Timer(1.0, os.kill, args=(os.getpid(), signal.SIGTERM)).start()

    code = group.wait()

    assert code == 0
    assert child.poll() is not None


def test_a_missing_program_is_a_clear_error():
    from client.contract.processes import executable
    from privacy.errors import ConfigError

    with pytest.raises(ConfigError, match="not installed"):
        executable("flower-no-such-program")
