"""The poll seam into Flower: pinned to Flower 1.41's sources, and Flower's own loops back off."""

from __future__ import annotations

import importlib
import inspect

import flwr
import pytest

from client.contract import polling as fast_poll
from client.contract.errors import FlowerSeamError
from client.contract.polling import BackoffClock, PollSettings


def test_the_hooked_flower_functions_exist_and_still_sleep_3_s():
    # Fails on a Flower upgrade: re-read the two loops and re-pin the seam.
    assert flwr.__version__.startswith(fast_poll.PINNED_FLOWER)
    node = importlib.import_module(fast_poll.SUPERNODE_MODULE)
    grid = importlib.import_module(fast_poll.GRID_MODULE)
    assert "time.sleep(3)" in inspect.getsource(getattr(node, fast_poll.SUPERNODE_LOOP))
    assert callable(getattr(node, fast_poll.SUPERNODE_PULL))
    assert "time.sleep(0.5)" in inspect.getsource(getattr(node, fast_poll.SUPERNODE_PUSH))
    loop = getattr(getattr(grid, fast_poll.GRID_CLASS), fast_poll.GRID_LOOP)
    assert "time.sleep(3)" in inspect.getsource(loop)
    assert node.time.sleep is not None and grid.time.time is not None


def test_the_clock_backs_off_to_its_cap_and_resets():
    slept: list[float] = []
    clock = BackoffClock(PollSettings(first_s=0.05, max_s=1.0), sleep=slept.append)

    for _ in range(7):
        clock.sleep(3)
    clock.reset()
    clock.sleep(3)
    clock.sleep(0.5)  # any other sleep is Flower's own

    assert slept == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 0.05, 0.5]
    assert clock.monotonic() > 0  # the rest of `time` is the real one


def test_bad_intervals_are_refused():
    with pytest.raises(ValueError, match="poll intervals"):
        PollSettings(first_s=2.0, max_s=1.0)


def test_flowers_own_grid_loop_pulls_again_after_the_back_off(monkeypatch):
    grid_module = importlib.import_module(fast_poll.GRID_MODULE)
    grid_class = getattr(grid_module, fast_poll.GRID_CLASS)
    monkeypatch.setattr(grid_module, "time", grid_module.time)
    monkeypatch.setattr(grid_class, fast_poll.GRID_LOOP, getattr(grid_class, fast_poll.GRID_LOOP))
    clock = fast_poll.install_grid_poll(PollSettings(first_s=0.01, max_s=0.02))
    slept: list[float] = []
    clock._sleep = slept.append

    class Reply:
        class metadata:  # noqa: N801 - the shape of Flower's Message.metadata
            reply_to_message_id = "m1"

    pulls = iter([[], [], [], [Reply()]])
    grid = object.__new__(grid_class)
    grid.push_messages = lambda messages: ["m1"]
    grid.pull_messages = lambda ids: next(pulls)

    replies = grid.send_and_receive([object()], timeout=60)
    again = iter([[Reply()]])
    grid.pull_messages = lambda ids: next(again)
    grid.send_and_receive([object()], timeout=60)

    assert len(replies) == 1
    assert slept == [0.01, 0.02, 0.02]  # not 3 s each; the second exchange waited not at all


def test_the_supernode_seam_resets_when_a_message_arrives(monkeypatch):
    node = importlib.import_module(fast_poll.SUPERNODE_MODULE)
    monkeypatch.setattr(node, "time", node.time)
    results = iter([None, None, 7, None])
    monkeypatch.setattr(node, fast_poll.SUPERNODE_PULL, lambda **_: next(results))
    clock = fast_poll.install_supernode_poll(PollSettings(first_s=0.01, max_s=1.0))
    slept: list[float] = []
    clock._sleep = slept.append

    for _ in range(4):
        if getattr(node, fast_poll.SUPERNODE_PULL)() is None:
            node.time.sleep(3)  # what Flower's loop does after an empty pull
    node.time.sleep(0.5)  # what it does while its ClientApp has not replied yet
    node.time.sleep(0.2)

    assert node.time is clock
    assert slept == [0.01, 0.02, 0.01, fast_poll.REPLY_POLL_S, 0.2]


def test_a_flower_without_the_hooked_sleep_fails_loudly(tmp_path, monkeypatch):
    (tmp_path / "fake_flower_loop.py").write_text(
        "import time\n\ndef start_client_internal():\n    time.sleep(1)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    with pytest.raises(FlowerSeamError, match=r"no longer calls time\.sleep"):
        fast_poll._hooked("fake_flower_loop", None, "start_client_internal")
    with pytest.raises(FlowerSeamError, match="has no"):
        fast_poll._hooked("fake_flower_loop", None, "moved_away")


def test_the_serverapp_executor_seam_and_entry_exist_in_this_flower():
    # server.engine.fast_serverapp replaces the SuperExec's executor through get_executor
    # and starts each ServerApp through Flower's flwr-serverapp entry.
    loop = importlib.import_module("flwr.supercore.superexec.run_superexec")
    entry = importlib.import_module("flwr.superlink.cli.flwr_serverapp")

    assert "get_executor(" in inspect.getsource(loop.run_superexec)
    assert callable(entry.flwr_serverapp)


def test_the_superexec_task_poll_and_the_object_pulls_are_where_they_were_pinned():
    # Fails on a Flower upgrade that moves the SuperExec's sleep or the pull back-off.
    from flwr.supercore.inflatable import inflatable_utils

    loop = importlib.import_module(fast_poll.SUPEREXEC_MODULE)
    assert fast_poll.TASK_SLEEP in inspect.getsource(getattr(loop, fast_poll.SUPEREXEC_LOOP))
    for name in fast_poll.PULL_FUNCTIONS:
        defaults = getattr(inflatable_utils, name).__kwdefaults__
        assert {k: defaults[k] for k in fast_poll.FLOWER_PULL_BACKOFF} in (
            fast_poll.FLOWER_PULL_BACKOFF,
            fast_poll.PULL_BACKOFF,
        )


def test_object_pulls_retry_after_50_ms_and_a_moved_default_fails_loudly(monkeypatch):
    from flwr.supercore.inflatable import inflatable_utils

    for name in fast_poll.PULL_FUNCTIONS:
        function = getattr(inflatable_utils, name)
        monkeypatch.setattr(function, "__kwdefaults__", dict(function.__kwdefaults__))
    fast_poll.install_object_pull_backoff()
    assert inflatable_utils.pull_objects.__kwdefaults__["initial_backoff"] == 0.05
    assert inflatable_utils.pull_objects.__kwdefaults__["backoff_cap"] == 1.0

    inflatable_utils.pull_objects.__kwdefaults__["initial_backoff"] = 2  # "a new Flower"
    with pytest.raises(FlowerSeamError, match="pull seam"):
        fast_poll.install_object_pull_backoff()


def test_a_wake_ends_the_executors_wait_at_once_and_resets_its_back_off(tmp_path, monkeypatch):
    import threading
    import time

    loop = importlib.import_module(fast_poll.SUPEREXEC_MODULE)
    monkeypatch.setattr(loop, "time", loop.time)
    waker = fast_poll.WakeChannel(tmp_path / "wake.fifo")  # the SuperNode's end
    wake = fast_poll.WakeChannel(tmp_path / "wake.fifo")  # the executor's end
    clock = fast_poll.install_superexec_poll(
        PollSettings(first_s=0.01, max_s=5.0, busy_max_s=5.0, busy_s=0), wake=wake
    )
    for _ in range(8):  # idle: 0.01 doubling towards 5 s
        clock.next_interval()

    threading.Timer(0.2, waker.notify).start()
    began = time.monotonic()
    loop.time.sleep(1)  # what Flower's loop does between two task polls
    waited = time.monotonic() - began

    assert 0.15 < waited < 1.5  # woken, not the 2.56 s the back-off had reached
    assert clock.next_interval() == 0.01  # and the next poll is short again
    assert not wake.wait(0)  # the wake was drained
    waker.close()
    wake.close()


def test_a_wake_path_that_is_not_a_fifo_is_refused(tmp_path):
    (tmp_path / "plain").write_text("")

    with pytest.raises(ValueError, match="not a FIFO"):
        fast_poll.WakeChannel(tmp_path / "plain")


def test_within_a_run_the_back_off_stops_short_of_the_idle_cap():
    slept: list[float] = []
    clock = BackoffClock(
        PollSettings(first_s=0.05, max_s=1.0, busy_max_s=0.2, busy_s=60), sleep=slept.append
    )
    for _ in range(6):
        clock.sleep(3)
    clock.reset()  # a message arrived: a run is on
    for _ in range(5):
        clock.sleep(3)

    assert slept == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 0.05, 0.1, 0.2, 0.2, 0.2]


def test_a_reply_wake_ends_the_grids_wait_once_the_reply_is_in(tmp_path, monkeypatch):
    import threading
    import time

    grid_module = importlib.import_module(fast_poll.GRID_MODULE)
    grid_class = getattr(grid_module, fast_poll.GRID_CLASS)
    monkeypatch.setattr(grid_module, "time", grid_module.time)
    monkeypatch.setattr(grid_class, fast_poll.GRID_LOOP, getattr(grid_class, fast_poll.GRID_LOOP))
    superlink = fast_poll.WakeChannel(tmp_path / "replies.fifo")  # the SuperLink's end
    wake = fast_poll.WakeChannel(tmp_path / "replies.fifo")  # the ServerApp's end
    fast_poll.install_grid_poll(
        PollSettings(first_s=5.0, max_s=5.0, busy_max_s=5.0), wake=wake
    )  # blind, each wait would be 5 s

    class Reply:
        class metadata:  # noqa: N801 - the shape of Flower's Message.metadata
            reply_to_message_id = "m1"

    pulled: list[float] = []
    began = time.monotonic()

    def pull(ids: object) -> list[object]:
        pulled.append(time.monotonic() - began)
        return [Reply()] if len(pulled) == 2 else []

    grid = object.__new__(grid_class)
    grid.push_messages = lambda messages: ["m1"]
    grid.pull_messages = pull
    # a node's reply: its message, then its objects a few ms apart
    for delay in (0.2, 0.21, 0.22, 0.23):
        threading.Timer(delay, superlink.notify).start()

    replies = grid.send_and_receive([object()], timeout=60)

    assert len(replies) == 1
    assert pulled[0] < 0.1  # pulled at once
    assert 0.23 <= pulled[1] < 2.0  # after the last object's wake, not 5 s later
    assert not wake.wait(0)  # every wake of that reply was taken
    superlink.close()
    wake.close()


def test_a_settling_wait_ends_after_the_wakes_stop_or_at_its_cap(tmp_path):
    import threading
    import time

    waker = fast_poll.WakeChannel(tmp_path / "w.fifo")
    wake = fast_poll.WakeChannel(tmp_path / "w.fifo")
    sleep = fast_poll.settling_sleep(wake, settle_s=0.05, settle_max_s=0.3)

    began = time.monotonic()
    sleep(0.1)  # no wake: the whole interval
    quiet = time.monotonic() - began
    stop = threading.Event()

    def chatter() -> None:  # wakes every 10 ms for a second
        for _ in range(100):
            if stop.is_set():
                return
            waker.notify()
            time.sleep(0.01)

    threading.Thread(target=chatter, daemon=True).start()
    began = time.monotonic()
    sleep(10)
    capped = time.monotonic() - began
    stop.set()

    assert quiet >= 0.1
    assert 0.3 <= capped < 2.0  # woken at once, then held at most settle_max_s
    waker.close()
    wake.close()
