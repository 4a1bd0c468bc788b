"""The federation at a glance: its institutions, their nodes, and ε spent against budgets."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from server.console import charts
from server.console.deps import DbDep, ViewerDep, render
from server.store import browse
from server.store.spending import epsilon_totals

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def overview(*, request: Request, db: DbDep, viewer: ViewerDep) -> HTMLResponse:
    """Institutions (``run:read``), node keys (``principal:read``), ε bars (``ledger:read``)."""
    members = browse.institutions(session=db, actor=viewer.principal)
    totals = (
        epsilon_totals(session=db, actor=viewer.principal) if viewer.may("ledger:read") else None
    )
    recent = browse.list_runs(session=db, actor=viewer.principal, limit=5)
    return render(
        request,
        "overview.html",
        viewer=viewer,
        institutions=members,
        totals=totals,
        budgets_figure=charts.epsilon_budgets(totals) if totals else None,
        recent=recent,
    )
