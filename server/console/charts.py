"""Plotly figures (plain ``{"data": ..., "layout": ...}`` dictionaries) for the console's pages.

The browser draws them with the locally served Plotly bundle; every page also
shows the same numbers as a table, so nothing is lost without JavaScript.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from server.store.models import DriftEvent, LedgerEntry, Round
from server.store.spending import EpsilonTotal

Figure = dict[str, Any]


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": {"text": title, "font": {"size": 14}, "x": 0.01, "xanchor": "left"},
        "height": 300,
        "margin": {"l": 50, "r": 20, "t": 40, "b": 70},
        "legend": {"orientation": "h", "y": -0.32},
        **extra,
    }


def accuracy_and_loss(rounds: Sequence[Round]) -> Figure:
    """Accuracy (left axis) and loss (right axis) per round."""
    x = [r.round for r in rounds]
    return {
        "data": [
            {
                "x": x,
                "y": [r.accuracy for r in rounds],
                "name": "accuracy",
                "type": "scatter",
                "mode": "lines+markers",
            },
            {
                "x": x,
                "y": [r.loss for r in rounds],
                "name": "loss",
                "type": "scatter",
                "mode": "lines+markers",
                "yaxis": "y2",
            },
        ],
        "layout": _layout(
            "Accuracy and loss per round",
            xaxis={"title": {"text": "round"}, "dtick": 1},
            yaxis={"title": {"text": "accuracy"}},
            yaxis2={"title": {"text": "loss"}, "overlaying": "y", "side": "right"},
        ),
    }


def epsilon_per_round(entries: Iterable[tuple[str, LedgerEntry]]) -> Figure:
    """Each institution's ε after each training round (one line per institution)."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for institution, entry in entries:
        if entry.kind == "train":
            series[institution].append((entry.round, entry.epsilon))
    data = [
        {
            "x": [r for r, _ in points],
            "y": [e for _, e in points],
            "name": name,
            "type": "scatter",
            "mode": "lines+markers",
        }
        for name, points in sorted(series.items())
    ]
    return {
        "data": data,
        "layout": _layout(
            "ε per institution per round",
            xaxis={"title": {"text": "round"}, "dtick": 1},
            yaxis={"title": {"text": "ε (cumulative)"}, "rangemode": "tozero"},
        ),
    }


def epsilon_budgets(totals: Sequence[EpsilonTotal]) -> Figure:
    """ε spent (over all runs) against each institution's budget, as horizontal bars."""
    names = [t.institution for t in totals]
    return {
        "data": [
            {
                "y": names,
                "x": [t.epsilon for t in totals],
                "name": "ε spent",
                "type": "bar",
                "orientation": "h",
            },
            {
                "y": names,
                "x": [t.budget for t in totals],
                "name": "ε budget",
                "type": "bar",
                "orientation": "h",
                "opacity": 0.45,
            },
        ],
        "layout": _layout(
            "ε spent vs budget",
            barmode="group",
            height=max(220, 60 + 45 * len(names)),
            margin={"l": 140, "r": 20, "t": 40, "b": 40},
            xaxis={"title": {"text": "ε"}, "rangemode": "tozero"},
        ),
    }


def drift_scores(events: Sequence[DriftEvent]) -> Figure:
    """Each feature's worst detector score at each status change, oldest first."""
    series: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for event in sorted(events, key=lambda e: e.time):
        best: dict[str, float] = {}
        for item in event.features:
            score = item.get("score")
            if isinstance(score, int | float):
                best[item["name"]] = max(best.get(item["name"], float("-inf")), float(score))
        for name, score in best.items():
            series[name].append((event.time.isoformat(), score))
    data = [
        {
            "x": [t for t, _ in points],
            "y": [s for _, s in points],
            "name": name,
            "type": "scatter",
            "mode": "lines+markers",
        }
        for name, points in sorted(series.items())
    ]
    return {
        "data": data,
        "layout": _layout("Per-feature drift score over time", yaxis={"title": {"text": "score"}}),
    }


def histogram(feature: dict[str, Any]) -> Figure:
    """A feature's reference and current histograms side by side."""
    bins = [str(b) for b in feature.get("bins", [])]
    return {
        "data": [
            {"x": bins, "y": feature.get("reference", []), "name": "reference", "type": "bar"},
            {"x": bins, "y": feature.get("current", []), "name": "current", "type": "bar"},
        ],
        "layout": _layout(
            f"{feature.get('name')}: {feature.get('status')}",
            barmode="group",
            height=260,
            yaxis={"title": {"text": "share"}},
        ),
    }
