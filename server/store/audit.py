"""The tamper-evident audit log: an append-only SHA-256 hash chain in the store.

Each event's ``hash`` is SHA-256 over a canonical encoding (JSON, sorted keys,
no whitespace, UTC ISO-8601 times) of its sequence number, time, actor,
action, target, outcome, details and the previous event's hash. Editing,
deleting, inserting or reordering a row breaks the chain at that row, and
``verify_chain`` names the first break. Nothing here updates or deletes an
event; the ORM refuses to (see ``models.py``).

Appends serialise through the database, not through this process: the append
takes the audit lock (an advisory lock on PostgreSQL; SQLite's write lock,
held since ``BEGIN IMMEDIATE``) before it reads the head, so concurrent writers
in any number of threads or processes extend one chain and never fork it. The
unique constraints on ``seq`` and ``prev_hash`` would reject a fork even if the
lock were bypassed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from privacy.errors import ConfigError, FedwardenError
from server.run_events import json_safe
from server.store.locks import LockPurpose, lock_for_transaction
from server.store.models import AuditEvent, utcnow

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
OUTCOMES = ("success", "denied", "failure", "error")
_FIELDS = (
    AuditEvent.seq,
    AuditEvent.time,
    AuditEvent.actor,
    AuditEvent.action,
    AuditEvent.target,
    AuditEvent.outcome,
    AuditEvent.details,
    AuditEvent.prev_hash,
    AuditEvent.hash,
)


@dataclass(frozen=True, kw_only=True)
class ChainBreak:
    """The first event at which the chain does not hold, and why."""

    seq: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class ChainReport:
    """What a walk of the chain found."""

    events: int
    head_seq: int
    head_hash: str
    broken: ChainBreak | None = None


def format_time(time: datetime) -> str:
    """The canonical form of a time: UTC, ISO 8601, microseconds, a trailing ``Z``."""
    return time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_encoding(event: Mapping[str, Any]) -> bytes:
    """The bytes an event's hash covers: every field but ``hash``, as canonical JSON."""
    fields = {
        "seq": event["seq"],
        "time": event["time"] if isinstance(event["time"], str) else format_time(event["time"]),
        "actor": event["actor"],
        "action": event["action"],
        "target": event["target"],
        "outcome": event["outcome"],
        "details": event["details"],
        "prev_hash": event["prev_hash"],
    }
    text = json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def event_hash(event: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of ``canonical_encoding(event)``."""
    return hashlib.sha256(canonical_encoding(event)).hexdigest()


def head(session: Session) -> tuple[int, str]:
    """The newest event's sequence number and hash; ``(0, GENESIS_HASH)`` for an empty log."""
    last = session.execute(
        select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
    ).first()
    return (last.seq, last.hash) if last is not None else (0, GENESIS_HASH)


def append(
    session: Session,
    *,
    actor: str,
    action: str,
    target: str | None = None,
    outcome: str = "success",
    details: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Add an event at the head of the chain, inside the caller's transaction.

    Parameters
    ----------
    session : Session
        The transaction the event belongs to: it is written if and only if the
        transaction commits.
    actor : str
        Who acted: a principal's name, ``system``, or ``anonymous``.
    action : str
        What was done or attempted (``role.grant``, ``authenticate``, ...).
    target : str, optional
        What it was done to (``principal:alice``, ``run:3f2c...``).
    outcome : str
        ``success``, ``denied``, ``failure`` or ``error``.
    details : Mapping, optional
        Facts about the event; stored as JSON (infinite numbers as ``"inf"``).
        Never put a secret here.
    """
    if outcome not in OUTCOMES:
        raise ConfigError(f"unknown audit outcome {outcome!r}", outcome=outcome)
    lock_for_transaction(session, purpose=LockPurpose.AUDIT_CHAIN)
    last_seq, last_hash = head(session)
    fields: dict[str, Any] = {
        "seq": last_seq + 1,
        "time": utcnow(),
        "actor": actor,
        "action": action,
        "target": target,
        "outcome": outcome,
        "details": json.loads(json.dumps(json_safe(dict(details or {})), default=str)),
        "prev_hash": last_hash,
    }
    event = AuditEvent(**fields, hash=event_hash(fields))
    session.add(event)
    session.flush()
    return event


def record_refusal(
    session: Session,
    *,
    error: FedwardenError,
    actor: str,
    action: str,
    target: str | None = None,
    outcome: str = "denied",
    details: Mapping[str, Any] | None = None,
) -> FedwardenError:
    """Roll back the caller's transaction, audit a refusal in a transaction of its own.

    A denial, a failed authentication or a rejected request must be on record
    although the work it stopped is not: the caller's transaction is rolled
    back first (so nothing it wrote survives and it holds no lock), then the
    event is committed alone. Pass plain strings: objects loaded in ``session``
    are expired by the rollback. Use as ``raise record_refusal(session, ...)``.

    Returns
    -------
    FedwardenError
        ``error``, for the caller to raise.
    """
    bind = session.get_bind()
    session.rollback()
    try:
        with Session(bind) as own:
            append(
                own,
                actor=actor,
                action=action,
                target=target,
                outcome=outcome,
                details={**(details or {}), "error": str(error)},
            )
            own.commit()
    except SQLAlchemyError as exc:
        logger.error("could not audit the refused %s by %s: %s", action, actor, exc)
    logger.info("refused %s by %s on %s: %s", action, actor, target, error)
    return error


def iter_events(session: Session) -> Iterator[dict[str, Any]]:
    """Every event in chain order, as plain dictionaries (streamed, not loaded at once)."""
    rows = session.execute(
        select(*_FIELDS).order_by(AuditEvent.seq).execution_options(yield_per=1000)
    )
    for row in rows:
        yield event_to_dict(row._asdict())


def event_to_dict(event: Mapping[str, Any] | AuditEvent) -> dict[str, Any]:
    """An event as JSON-ready data, with the canonical time."""
    if isinstance(event, AuditEvent):
        event = {column.key: getattr(event, column.key) for column in _FIELDS}
    data = dict(event)
    if isinstance(data["time"], datetime):
        data["time"] = format_time(data["time"])
    return data


def verify_events(
    events: Iterable[Mapping[str, Any]], *, anchor: tuple[int, str] | None = None
) -> ChainReport:
    """Walk events in order and report the first one at which the chain breaks.

    Parameters
    ----------
    events : iterable of mappings
        Events as ``event_to_dict`` gives them (from the store or an export).
    anchor : (int, str), optional
        A signed receipt's ``(seq, head_hash)``: the chain must still hold that
        event with that hash, which also catches a log cut short or rewritten
        wholesale before the receipt.

    Returns
    -------
    ChainReport
        How many events verified, the last good head, and the first break if any.
    """
    verified, head_hash = 0, GENESIS_HASH
    anchored = anchor is None or anchor[0] == 0
    for event in events:
        problem = _problem(event, expected_seq=verified + 1, prev_hash=head_hash, anchor=anchor)
        if problem is not None:
            seq, reason = problem
            return ChainReport(
                events=verified,
                head_seq=verified,
                head_hash=head_hash,
                broken=ChainBreak(seq=seq, reason=reason),
            )
        anchored = anchored or (anchor is not None and event["seq"] == anchor[0])
        verified, head_hash = verified + 1, event["hash"]
    if not anchored and anchor is not None:
        reason = f"event {anchor[0]} of the signed receipt is gone (the log was cut short)"
        return ChainReport(
            events=verified,
            head_seq=verified,
            head_hash=head_hash,
            broken=ChainBreak(seq=anchor[0], reason=reason),
        )
    return ChainReport(events=verified, head_seq=verified, head_hash=head_hash)


def verify_chain(session: Session, *, anchor: tuple[int, str] | None = None) -> ChainReport:
    """Walk the store's chain from the first event; see ``verify_events``."""
    return verify_events(iter_events(session), anchor=anchor)


def export_jsonl(session: Session, out: TextIO) -> int:
    """Write every event as one JSON line (sorted keys); return how many were written."""
    count = 0
    for event in iter_events(session):
        out.write(json.dumps(event, sort_keys=True, ensure_ascii=False) + "\n")
        count += 1
    return count


def tail(session: Session, *, limit: int = 20) -> list[dict[str, Any]]:
    """The newest ``limit`` events, oldest first."""
    rows = session.execute(select(*_FIELDS).order_by(AuditEvent.seq.desc()).limit(limit)).all()
    return [event_to_dict(row._asdict()) for row in reversed(rows)]


def _problem(
    event: Mapping[str, Any],
    *,
    expected_seq: int,
    prev_hash: str,
    anchor: tuple[int, str] | None,
) -> tuple[int, str] | None:
    """``(seq, reason)`` if ``event`` breaks the chain where ``expected_seq`` should be."""
    seq = int(event["seq"])
    if seq > expected_seq:
        return expected_seq, f"event {expected_seq} is missing (deleted, or events renumbered)"
    if seq < expected_seq:
        return seq, f"event {seq} is out of sequence (inserted, or events renumbered)"
    if event["prev_hash"] != prev_hash:
        return seq, (
            f"event {seq} does not link to event {seq - 1} "
            "(an event was inserted, deleted or reordered)"
        )
    if event_hash(event) != event["hash"]:
        return seq, f"event {seq} does not match its hash (it was modified)"
    if anchor is not None and seq == anchor[0] and event["hash"] != anchor[1]:
        return seq, f"event {seq} differs from the signed receipt (it was rewritten)"
    return None
