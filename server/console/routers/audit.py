"""The audit log: filtered and paged, verified (alone or against a signed receipt), exported.

Verification is the store's own (``oversight.verify_audit_log``, which calls
``audit.verify_chain``); the page shows what it found and, if the chain is
broken, the first broken event.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from privacy.errors import ConfigError
from server.console.deps import DbDep, FormViewerDep, StateDep, Viewer, ViewerDep, render
from server.store import browse
from server.store.anchoring import Receipt, pinned_public_key
from server.store.audit import ChainReport
from server.store.oversight import export_audit_log, verify_audit_log
from server.store.settings import StoreSettings

router = APIRouter()


def parse_time(text: str | None, *, field: str) -> datetime | None:
    """``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM`` (UTC) from a filter box; ``None`` if blank."""
    if not text or not text.strip():
        return None
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"{field} must be a date like 2026-12-01 or 2026-12-01T14:30") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _filter(
    actor: str | None, action: str | None, since: str | None, until: str | None
) -> browse.AuditFilter:
    return browse.AuditFilter(
        actor=(actor or "").strip() or None,
        action=(action or "").strip() or None,
        since=parse_time(since, field="since"),
        until=parse_time(until, field="until"),
    )


def _page(
    request: Request,
    db: DbDep,
    state: StateDep,
    viewer: Viewer,
    *,
    where: browse.AuditFilter,
    before: int | None,
    report: ChainReport | None = None,
    broken: dict[str, object] | None = None,
    receipt_checked: bool = False,
) -> HTMLResponse:
    if report is not None and request.headers.get("x-console-fragment") == "1":
        return render(
            request,
            "_verify.html",
            viewer=viewer,
            report=report,
            broken=broken,
            receipt_checked=receipt_checked,
        )
    page = browse.audit_page(
        session=db,
        actor=viewer.principal,
        where=where,
        before=before,
        limit=state.settings.page_size,
    )
    return render(
        request,
        "audit.html",
        viewer=viewer,
        page=page,
        where=where,
        query={k: v for k, v in request.query_params.items() if k != "before"},
        report=report,
        broken=broken,
        receipt_checked=receipt_checked,
    )


@router.get("/audit", response_class=HTMLResponse)
def audit_log(
    *,
    request: Request,
    state: StateDep,
    db: DbDep,
    viewer: ViewerDep,
    actor: str | None = None,
    action: str | None = None,
    since: str | None = None,
    until: str | None = None,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    """A page of events, newest first (``audit:read``)."""
    where = _filter(actor, action, since, until)
    return _page(request, db, state, viewer, where=where, before=before)


def _first_broken(db: DbDep, viewer: Viewer, report: ChainReport) -> dict[str, object] | None:
    if report.broken is None:
        return None
    event = browse.audit_event(session=db, actor=viewer.principal, seq=report.broken.seq)
    return {"seq": report.broken.seq, "reason": report.broken.reason, "event": event}


@router.post("/audit/verify", response_class=HTMLResponse)
def verify(*, request: Request, state: StateDep, db: DbDep, viewer: FormViewerDep) -> HTMLResponse:
    """Walk the whole chain (``audit:read``; audited as ``audit.verify``)."""
    report = verify_audit_log(session=db, actor=viewer.principal)
    return _page(
        request,
        db,
        state,
        viewer,
        where=browse.AuditFilter(),
        before=None,
        report=report,
        broken=_first_broken(db, viewer, report),
    )


@router.post("/audit/verify-receipt", response_class=HTMLResponse)
def verify_receipt(
    *,
    request: Request,
    state: StateDep,
    db: DbDep,
    viewer: FormViewerDep,
    receipt: Annotated[str, Form(max_length=10_000)],
    public_key: Annotated[str | None, Form(max_length=200)] = None,
) -> HTMLResponse:
    """Check a signed receipt and that the chain still holds its event (``audit:read``)."""
    parsed = Receipt.from_json(receipt)
    report = verify_audit_log(
        session=db,
        actor=viewer.principal,
        receipt=parsed,
        # A receipt is checked only against a pinned key: the form's, else the store's
        # (FEDWARDEN_AUDIT_PUBLIC_KEY); never against the key the receipt names.
        public_key=pinned_public_key(
            (public_key or "").strip() or StoreSettings().audit_public_key
        ),
    )
    return _page(
        request,
        db,
        state,
        viewer,
        where=browse.AuditFilter(),
        before=None,
        report=report,
        broken=_first_broken(db, viewer, report),
        receipt_checked=True,
    )


@router.get("/audit/export")
def export(db: DbDep, viewer: ViewerDep) -> StreamingResponse:
    """Every event as JSON Lines (``audit:read``; audited as ``audit.export``)."""
    spool = tempfile.SpooledTemporaryFile(max_size=8 << 20, mode="w+", encoding="utf-8")  # noqa: SIM115 (the stream closes it)
    export_audit_log(session=db, actor=viewer.principal, out=spool)  # type: ignore[arg-type]
    spool.seek(0)

    def chunks() -> Iterator[bytes]:
        try:
            while block := spool.read(1 << 16):
                yield block.encode("utf-8")
        finally:
            spool.close()

    return StreamingResponse(
        chunks(),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="audit-log.jsonl"'},
    )
