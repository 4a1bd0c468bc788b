"""Runs: a paged list, and one run's rounds, ε per institution, refusals and checkpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from server.console import charts
from server.console.deps import DbDep, StateDep, ViewerDep, render
from server.store import browse
from server.store.runs import get_run
from server.store.spending import ledger_entries

router = APIRouter()


@router.get("/runs", response_class=HTMLResponse)
def run_list(
    *,
    request: Request,
    state: StateDep,
    db: DbDep,
    viewer: ViewerDep,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> HTMLResponse:
    """Runs newest first, ``page_size`` at a time (``run:read``)."""
    page = browse.list_runs(
        session=db, actor=viewer.principal, limit=state.settings.page_size, offset=offset
    )
    return render(request, "runs.html", viewer=viewer, page=page)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(*, request: Request, db: DbDep, viewer: ViewerDep, run_id: str) -> HTMLResponse:
    """One run (``run:read``); its ledger needs ``ledger:read``."""
    run, rounds = get_run(session=db, actor=viewer.principal, run_id=run_id)
    entries = (
        ledger_entries(session=db, actor=viewer.principal, run_id=run_id)
        if viewer.may("ledger:read")
        else None
    )
    checkpoints = browse.run_checkpoints(session=db, actor=viewer.principal, run_id=run_id)
    models = (
        browse.run_models(session=db, actor=viewer.principal, run_id=run_id)
        if viewer.may("model:read")
        else []
    )
    return render(
        request,
        "run.html",
        viewer=viewer,
        run=run,
        rounds=rounds,
        entries=entries,
        checkpoints=checkpoints,
        models=models,
        metrics_figure=charts.accuracy_and_loss(rounds),
        epsilon_figure=charts.epsilon_per_round(entries) if entries else None,
    )
