"""Models: every version with its stage and lineage; promotion behind a confirmation step.

Promoting needs ``model:promote`` (operators): the confirmation page already
checks it, so an auditor or an admin is refused, and audited, before any form
is shown; the promotion itself goes through ``promote_model_version``, which
checks again and writes the ``model.promote`` event.
"""

from __future__ import annotations

from collections import defaultdict

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from server.console.deps import DbDep, FormViewerDep, ViewerDep, render
from server.store import rbac
from server.store.models import ModelVersion
from server.store.registry import get_model_version, list_model_versions, promote_model_version

router = APIRouter()


@router.get("/models", response_class=HTMLResponse)
def model_list(*, request: Request, db: DbDep, viewer: ViewerDep) -> HTMLResponse:
    """Every version, grouped by name (``model:read``)."""
    by_name: dict[str, list[ModelVersion]] = defaultdict(list)
    for version in list_model_versions(session=db, actor=viewer.principal):
        by_name[version.name].append(version)
    return render(request, "models.html", viewer=viewer, models=dict(by_name))


@router.get("/models/{name}/{version}", response_class=HTMLResponse)
def model_page(
    *, request: Request, db: DbDep, viewer: ViewerDep, name: str, version: int
) -> HTMLResponse:
    """One version: lineage, artifact digest, schema (``model:read``)."""
    found = get_model_version(session=db, actor=viewer.principal, name=name, version=version)
    promoted = request.query_params.get("promoted") == "1"
    return render(request, "model.html", viewer=viewer, model=found, promoted=promoted)


@router.get("/models/{name}/{version}/promote", response_class=HTMLResponse)
def confirm_promotion(
    *, request: Request, db: DbDep, viewer: ViewerDep, name: str, version: int
) -> HTMLResponse:
    """The confirmation step (``model:promote`` checked, and a denial audited, here already)."""
    target = f"model:{name}@{version}"
    rbac.authorize(db, principal=viewer.principal, permission="model:promote", target=target)
    found = get_model_version(session=db, actor=viewer.principal, name=name, version=version)
    current = [
        v
        for v in list_model_versions(session=db, actor=viewer.principal, name=name)
        if v.stage == "production"
    ]
    return render(request, "promote.html", viewer=viewer, model=found, current=current)


@router.post("/models/{name}/{version}/promote")
def promote(db: DbDep, viewer: FormViewerDep, name: str, version: int) -> Response:
    """Promote (audited as ``model.promote``), then show the version."""
    promote_model_version(session=db, actor=viewer.principal, name=name, version=version)
    return RedirectResponse(f"/models/{name}/{version}?promoted=1", status_code=303)
