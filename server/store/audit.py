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

Keyed chain. A writer of the database could recompute an unkeyed chain, so
every event after the log's *genesis* event carries, as its ``hash``, an
HMAC-SHA256 under the coordinator's audit key (``audit_key.py``), which lives
outside the database. The genesis event (``audit.genesis``, written before the
first event of a new store, or before the next event of a store from before
keyed chains) names the log (``log_id``) and the key (``key_id``) and is MAC'd
over the hash of every unkeyed event before it, which pins them. ``verify_chain``
therefore fails on an edited, deleted, reordered or inserted event even when the
chain was recomputed, on an erased-and-renumbered log, on an empty log and on a
log with no genesis. Automatic checkpoints (the head's seq and hash, MAC'd,
appended to a file next to the key) catch a log cut short after them.

What it does not cover: whoever holds the audit key can rewrite the log and its
checkpoints; events written after the newest checkpoint can be dropped from the
end without a trace until the next checkpoint or a signed receipt
(``anchoring.py``) names them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time as clock
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from privacy.errors import ConfigError, FedwardenError
from server.run_events import json_safe
from server.store.audit_key import AuditKey, KeyLocator, locator_for
from server.store.locks import LockPurpose, lock_for_transaction
from server.store.models import AuditEvent, utcnow

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
GENESIS_ACTION = "audit.genesis"
_MAC_DOMAIN = b"fedwarden-audit-event-v1|"
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


def event_mac(event: Mapping[str, Any], key: AuditKey) -> str:
    """HMAC-SHA256 (hex) of ``canonical_encoding(event)`` under the audit key."""
    return key.mac(_MAC_DOMAIN + canonical_encoding(event))


def checkpoint_mac(key: AuditKey, *, log_id: str, seq: int, head_hash: str) -> str:
    """The MAC an automatic checkpoint of event ``seq`` of log ``log_id`` carries."""
    return key.mac(f"fedwarden-audit-checkpoint-v1|{log_id}|{seq}|{head_hash}".encode())


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
    locator = locator_for(session.get_bind())
    last_seq, last_hash = head(session)
    key, log_id = _writing_key(session, locator)
    if key is None:  # no genesis yet: key the log from here on
        key = locator.create_key()
        genesis = _add(
            session,
            key,
            seq=last_seq + 1,
            prev_hash=last_hash,
            actor="system",
            action=GENESIS_ACTION,
            target="audit-log",
            outcome="success",
            details={
                "log_id": uuid.uuid4().hex,
                "key_id": key.key_id,
                "unkeyed_events": last_seq,
                "unkeyed_head": last_hash,
            },
        )
        last_seq, last_hash = genesis.seq, genesis.hash
    elif log_id is not None:
        _maybe_checkpoint(locator, key, log_id=log_id, seq=last_seq, head_hash=last_hash)
    return _add(
        session,
        key,
        seq=last_seq + 1,
        prev_hash=last_hash,
        actor=actor,
        action=action,
        target=target,
        outcome=outcome,
        details=json.loads(
            json.dumps(json_safe(_with_credential(session, actor, details)), default=str)
        ),
    )


def _with_credential(
    session: Session, actor: str, details: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``details``, plus the acting key's prefix and issuer if ``actor`` used one."""
    merged = dict(details or {})
    credential = session.info.get("fedwarden.credential")
    if isinstance(credential, dict) and credential.get("principal") == actor:
        merged.setdefault("via_key", credential.get("via_key"))
        merged.setdefault("key_issuer", credential.get("key_issuer"))
    return merged


def _add(session: Session, key: AuditKey, *, seq: int, prev_hash: str, **values: Any) -> AuditEvent:
    fields: dict[str, Any] = {"seq": seq, "time": utcnow(), **values, "prev_hash": prev_hash}
    event = AuditEvent(**fields, hash=event_mac(fields, key))
    session.add(event)
    session.flush()
    return event


def genesis(session: Session) -> dict[str, Any] | None:
    """The log's genesis event, or ``None`` if it has none."""
    row = session.execute(
        select(*_FIELDS)
        .where(AuditEvent.action == GENESIS_ACTION)
        .order_by(AuditEvent.seq)
        .limit(1)
    ).first()
    return None if row is None else event_to_dict(row._asdict())


def _writing_key(session: Session, locator: KeyLocator) -> tuple[AuditKey | None, str | None]:
    """The key to MAC the next event with and the log's id; ``(None, None)`` before the genesis."""
    if locator.genesis_seen and locator.log_id is not None:
        return locator.require_key(), locator.log_id
    first = genesis(session)
    if first is None:
        return None, None
    key = locator.require_key()
    if first["details"].get("key_id") != key.key_id:
        raise ConfigError(
            f"the audit key {locator.path} is not the key this audit log was started with "
            f"(key id {first['details'].get('key_id')}); refusing to write"
        )
    locator.genesis_seen, locator.log_id = True, str(first["details"].get("log_id"))
    return key, locator.log_id


def _maybe_checkpoint(
    locator: KeyLocator, key: AuditKey, *, log_id: str, seq: int, head_hash: str
) -> None:
    """Append a checkpoint of the committed head to the file outside the store, when one is due.

    Called under the audit lock, with the head as committed, so the file only
    ever names events that exist.
    """
    path = locator.checkpoint_path
    if path is None or seq < 1:
        return
    if locator.last_checkpoint_seq is None:
        known = read_checkpoints(path)
        mine = [line for line in known if line.get("log_id") == log_id]
        locator.last_checkpoint_seq = int(mine[-1]["seq"]) if mine else 0
        locator.last_checkpoint_time = float(mine[-1].get("at", 0.0)) if mine else 0.0
    now = clock.time()
    due = seq - locator.last_checkpoint_seq >= locator.checkpoint_every or (
        now - locator.last_checkpoint_time >= locator.checkpoint_interval_s
    )
    if seq <= locator.last_checkpoint_seq or not due:
        return
    line = {
        "log_id": log_id,
        "seq": seq,
        "hash": head_hash,
        "at": now,
        "mac": checkpoint_mac(key, log_id=log_id, seq=seq, head_hash=head_hash),
    }
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, sort_keys=True) + "\n")
    except OSError as exc:
        logger.error("could not write the audit checkpoint to %s: %s", path, exc.strerror)
        return
    locator.last_checkpoint_seq, locator.last_checkpoint_time = seq, now


def read_checkpoints(path: Path) -> list[dict[str, Any]]:
    """Every line of a checkpoints file (unchecked); an absent file has none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"cannot read the audit checkpoints {path}: {exc.strerror}") from None
    lines: list[dict[str, Any]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = {"malformed": number}
        lines.append(value if isinstance(value, dict) else {"malformed": number})
    return lines


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
    events: Iterable[Mapping[str, Any]],
    *,
    key: AuditKey,
    anchor: tuple[int, str] | None = None,
    checkpoints: Iterable[Mapping[str, Any]] = (),
) -> ChainReport:
    """Walk events in order and report the first one at which the chain breaks.

    Parameters
    ----------
    events : iterable of mappings
        Events as ``event_to_dict`` gives them (from the store or an export).
    key : AuditKey
        The coordinator's audit key: every event from the genesis on must carry
        its MAC, and the genesis must name it.
    anchor : (int, str), optional
        A signed receipt's ``(seq, head_hash)``: the chain must still hold that
        event with that hash, which also catches a log cut short or rewritten
        wholesale before the receipt.
    checkpoints : iterable of mappings
        Lines of the automatic checkpoints file: each, if MAC'd for this log, must
        name an event the chain still holds with that hash.

    Returns
    -------
    ChainReport
        How many events verified, the last good head, and the first break if any.
    """
    verified, head_hash = 0, GENESIS_HASH
    log_id: str | None = None
    pins: dict[int, str] = {} if anchor is None or anchor[0] == 0 else {anchor[0]: anchor[1]}
    pending = list(checkpoints)

    def broken(seq: int, reason: str) -> ChainReport:
        return ChainReport(
            events=verified,
            head_seq=verified,
            head_hash=head_hash,
            broken=ChainBreak(seq=seq, reason=reason),
        )

    for event in events:
        problem = _problem(event, expected_seq=verified + 1, prev_hash=head_hash)
        if problem is None:
            problem = _mac_problem(event, key=key, keyed=log_id is not None)
        if problem is None and int(event["seq"]) in pins and event["hash"] != pins[event["seq"]]:
            problem = (
                int(event["seq"]),
                f"event {event['seq']} differs from " + _pin_name(anchor, event),
            )
        if problem is not None:
            return broken(*problem)
        if log_id is None and event["action"] == GENESIS_ACTION:
            log_id = str(event["details"].get("log_id"))
            for line in pending:
                line_problem = _checkpoint_problem(line, key=key, log_id=log_id)
                if line_problem is not None:
                    return broken(int(event["seq"]), line_problem)
                if line.get("log_id") == log_id:
                    pins.setdefault(int(line["seq"]), str(line["hash"]))
        verified, head_hash = verified + 1, event["hash"]
    if verified == 0:
        return broken(1, "the log is empty: its genesis event is gone (the log was erased)")
    if log_id is None:
        return broken(
            verified,
            "the log has no genesis event keyed with the audit key "
            "(it was rewritten or recreated without the key)",
        )
    missing = sorted(seq for seq in pins if seq > verified)
    if missing:
        what = (
            "the signed receipt"
            if anchor is not None and missing[-1] == anchor[0]
            else ("a checkpoint")
        )
        return broken(
            missing[-1],
            f"event {missing[-1]} named by {what} is gone (the log was cut short "
            f"at event {verified})",
        )
    return ChainReport(events=verified, head_seq=verified, head_hash=head_hash)


def verify_chain(session: Session, *, anchor: tuple[int, str] | None = None) -> ChainReport:
    """Walk the store's chain with its audit key and checkpoints; see ``verify_events``.

    Raises
    ------
    ConfigError
        The store's audit key is missing or unreadable.
    """
    locator = locator_for(session.get_bind())
    key = locator.require_key()
    path = locator.checkpoint_path
    checkpoints = read_checkpoints(path) if path is not None else []
    return verify_events(iter_events(session), key=key, anchor=anchor, checkpoints=checkpoints)


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
    event: Mapping[str, Any], *, expected_seq: int, prev_hash: str
) -> tuple[int, str] | None:
    """``(seq, reason)`` if ``event`` is not linked where ``expected_seq`` should be."""
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
    return None


def _mac_problem(event: Mapping[str, Any], *, key: AuditKey, keyed: bool) -> tuple[int, str] | None:
    """``(seq, reason)`` if ``event``'s hash is not the one it must carry."""
    seq = int(event["seq"])
    if keyed or event["action"] == GENESIS_ACTION:
        if not hmac.compare_digest(event_mac(event, key), str(event["hash"])):
            return seq, (
                f"event {seq} does not carry the audit key's MAC "
                "(it was modified, or forged without the key)"
            )
        if event["action"] == GENESIS_ACTION and keyed:
            return seq, f"event {seq} is a second genesis event"
        if event["action"] == GENESIS_ACTION and event["details"].get("key_id") != key.key_id:
            return seq, f"the genesis event {seq} names another audit key"
        return None
    if event_hash(event) != event["hash"]:
        return seq, f"event {seq} does not match its hash (it was modified)"
    return None


def _checkpoint_problem(line: Mapping[str, Any], *, key: AuditKey, log_id: str) -> str | None:
    """Why a checkpoints-file line cannot be trusted, or ``None``."""
    try:
        expected = checkpoint_mac(
            key, log_id=str(line["log_id"]), seq=int(line["seq"]), head_hash=str(line["hash"])
        )
        good = hmac.compare_digest(expected, str(line["mac"]))
    except (KeyError, TypeError, ValueError):
        good = False
    if not good:
        return "the checkpoints file holds a line without the audit key's MAC (it was edited)"
    return None


def _pin_name(anchor: tuple[int, str] | None, event: Mapping[str, Any]) -> str:
    if anchor is not None and anchor[0] == event["seq"]:
        return "the signed receipt (it was rewritten)"
    return "its checkpoint (it was rewritten)"
