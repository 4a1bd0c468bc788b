"""The service's drift window: binning a batch, the ring buffer, status changes kept once."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from deploy.drift import DriftPlan
from deploy.monitor import DriftMonitor
from deploy.window import DriftWindow, SlotBinner
from server.store import repository as repo
from server.store.engine import open_store
from tests.deploy.drift_cases import HeartWorld, SyntheticWorld


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld(reference_rows=20_000)


def test_the_binner_gives_the_layouts_slots_for_every_kind_of_value(world):
    numeric, categorical, probabilities = world.draw(np.random.default_rng(3), (64,))
    numeric[0] = [np.nan, -100.0, 8.0]  # missing, below the range, on its top edge
    numeric[1] = [-8.0, np.float32(0.16), 7.99]
    categorical[2] = [-1, -1]
    probabilities[3] = [0.0, 1.0]
    heart = HeartWorld()

    for layout, arrays in [
        (world.layout, (numeric, categorical, probabilities)),
        (heart.layout, heart.case(seed=0).windows.__dict__.values()),
    ]:
        n, c, p = (a.reshape(-1, a.shape[-1])[:64] for a in arrays)
        binner = SlotBinner(layout)
        assert np.array_equal(binner(n, c, p), layout.slot_indices(n, c, p)[:, binner.block_order])


def test_the_window_keeps_the_last_rows_within_its_span():
    window = DriftWindow(capacity=10, blocks=2)
    size = 30

    window.add(np.tile([[1, 11]], (4, 1)), times=100.0)
    window.add(np.tile([[2, 12]], (8, 1)), times=150.0)  # wraps round: 2 rows of the first left
    counts, rows, span = window.counts(size=size, now=160.0, span_s=100.0)
    recent, recent_rows, recent_span = window.counts(size=size, now=160.0, span_s=30.0)
    window.add(np.tile([[3, 13]], (25, 1)), times=170.0)  # more rows than it holds
    last, last_rows, _ = window.counts(size=size, now=170.0, span_s=100.0)

    assert rows == 10 and counts[1] == 2 and counts[2] == 8 and counts[11] == 2 and span == 60.0
    assert recent_rows == 8 and recent[1] == 0 and recent_span == 10.0
    assert last_rows == 10 and last[3] == 10 and last.sum() == 20


def test_a_status_change_is_written_once(world, tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    monitor = DriftMonitor(model="synthetic", version=1, profile=world.reference, plan=DriftPlan(),
                           window_rows=500, window_s=3600.0)
    rng = np.random.default_rng(0)

    monitor.record(*world.draw(rng, (500,)))
    calm, _, counts = monitor.evaluate()
    written_calm = monitor.persist(store, calm, counts)
    monitor.record(*world.draw(rng, (500,), shift=("x1", 1.0)))
    shifted, _, counts = monitor.evaluate()
    written = [monitor.persist(store, shifted, counts) for _ in range(3)]

    assert calm.status == "ok" and not written_calm
    assert shifted.status == "drift" and written == [True, False, False]
    with store.session() as session:
        event = repo.latest_drift_event(session=session, model="synthetic", version=1)
        assert event is not None and (event.previous, event.status) == ("ok", "drift")
        x1 = next(f for f in event.features if f["name"] == "x1" and f["detector"] == "ks")
        assert x1["status"] == "drift" and len(x1["reference"]) == len(x1["current"]) == len(x1["bins"])
    store.dispose()


def test_batches_wait_until_enough_rows_or_a_check(world):
    monitor = DriftMonitor(model="synthetic", version=1, profile=world.reference, plan=DriftPlan(),
                           window_rows=1000, window_s=3600.0, flush_rows=100)
    rng = np.random.default_rng(1)
    layout_size = world.layout.size

    for _ in range(3):
        monitor.record(*world.draw(rng, (30,)))
    waiting = monitor.window.counts(size=layout_size, now=1e12, span_s=1e13)[1]
    monitor.record(*world.draw(rng, (30,)))
    flushed = monitor.window.counts(size=layout_size, now=1e12, span_s=1e13)[1]
    monitor.record(*world.draw(rng, (30,)))
    state, _, _ = monitor.evaluate()

    assert (waiting, flushed, state.window_rows) == (0, 120, 150)


def test_a_window_too_small_to_judge_says_so_and_an_empty_one_warns_nothing(world, caplog, recwarn):
    monitor = DriftMonitor(model="synthetic", version=1, profile=world.reference, plan=DriftPlan(),
                           window_rows=1000, window_s=3600.0)
    with caplog.at_level(logging.DEBUG):
        empty, empty_scores, _ = monitor.evaluate()
    monitor.record(*world.draw(np.random.default_rng(2), (8,)))
    few, _, _ = monitor.evaluate()

    assert empty.status == few.status == "insufficient_data" and empty_scores is None
    assert empty.features == few.features == []  # no score on 0 or 8 rows
    assert (empty.window_rows, few.window_rows, few.min_rows) == (0, 8, DriftPlan().thresholds.min_rows)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
