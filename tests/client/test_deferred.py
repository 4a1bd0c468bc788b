"""Work a task leaves for after its reply: only where enabled, in order, failures skipped."""

from __future__ import annotations

import logging

import pytest

from client import deferred


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(deferred, "_queue", [])
    monkeypatch.setattr(deferred, "_enabled", [])
    return deferred


def test_nothing_is_kept_where_deferred_work_is_not_enabled(fresh):
    done: list[str] = []

    fresh.after_reply("simulation", lambda: done.append("ran"))

    assert fresh.run_deferred() == 0
    assert done == []


def test_deferred_work_runs_in_order_and_a_failure_is_logged_and_skipped(fresh, caplog):
    done: list[int] = []

    def broken() -> None:
        raise ValueError("no accountant")

    fresh.enable()
    fresh.after_reply("first", lambda: done.append(1))
    fresh.after_reply("broken cache", broken)
    fresh.after_reply("third", lambda: done.append(3))
    with caplog.at_level(logging.WARNING, logger="client.deferred"):
        ran = fresh.run_deferred()

    assert (ran, done) == (2, [1, 3])
    assert "deferred broken cache failed" in caplog.text
    assert fresh.run_deferred() == 0  # run once


def test_deferred_work_stops_at_its_time_limit(fresh):
    import time

    done: list[int] = []
    fresh.enable()
    for index in range(5):
        fresh.after_reply(f"slow {index}", lambda index=index: (time.sleep(0.05), done.append(index)))

    fresh.run_deferred(limit_s=0.12)

    assert 1 <= len(done) < 5  # what was left is dropped, not run later
    assert fresh._queue == []
