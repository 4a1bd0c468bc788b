"""Drift: each served model's status, per-feature scores over time, histograms, and advice.

Read from the store's ``drift_events`` (what the inference service recorded at
each status change). When a model drifts, the page recommends a retraining run
and lists the ε each institution has left for it (``ledger:read``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from server.console import charts
from server.console.deps import DbDep, ViewerDep, render
from server.store import browse
from server.store.drift import drift_events
from server.store.spending import epsilon_totals

router = APIRouter()

_ORDER = {"ok": 0, "warning": 1, "drift": 2}


@router.get("/drift", response_class=HTMLResponse)
def drift_index(*, request: Request, db: DbDep, viewer: ViewerDep) -> HTMLResponse:
    """Every model version's latest drift status (``model:read``)."""
    heads = browse.drift_heads(session=db, actor=viewer.principal)
    return render(request, "drift_index.html", viewer=viewer, heads=heads)


@router.get("/drift/{model}", response_class=HTMLResponse)
def drift_page(*, request: Request, db: DbDep, viewer: ViewerDep, model: str) -> HTMLResponse:
    """One model's drift history (``model:read``), newest change first."""
    events = drift_events(session=db, actor=viewer.principal, model=model)
    latest = events[0] if events else None
    features = _worst_per_feature(latest.features) if latest is not None else []
    advice = None
    if latest is not None and latest.status == "drift" and viewer.may("ledger:read"):
        advice = epsilon_totals(session=db, actor=viewer.principal)
    return render(
        request,
        "drift.html",
        viewer=viewer,
        model=model,
        events=events,
        latest=latest,
        features=features,
        advice=advice,
        scores_figure=charts.drift_scores(events) if events else None,
        histograms=[
            (item["name"], charts.histogram(item)) for item in features if item.get("bins")
        ],
    )


def _worst_per_feature(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per feature, the detector's block with the worst status (then the highest score)."""
    worst: dict[str, dict[str, Any]] = {}
    for item in items:
        name = str(item.get("name"))
        rank = (_ORDER.get(str(item.get("status")), 0), float(item.get("score") or 0.0))
        held = worst.get(name)
        if held is None or rank > (
            _ORDER.get(str(held.get("status")), 0),
            float(held.get("score") or 0.0),
        ):
            worst[name] = item
    return sorted(worst.values(), key=lambda i: (-_ORDER.get(str(i.get("status")), 0), i["name"]))
