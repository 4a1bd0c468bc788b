"""Key rotation over everything sealed that the store knows of, audited.

``rotate`` rewraps the data key of every sealed checkpoint blob, every sealed
model artifact the registry points at, and every sealed file under the extra
paths given (signing keys, PKI folders) and the store's own audit key file,
under the keyring's active KEK. Only each envelope's header changes: the
ciphertexts stay byte for byte the same.
``usage`` counts envelopes per KEK, so a KEK is retired only once nothing
needs it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, Engine, select
from sqlalchemy.orm import Session

from privacy.envelope import Envelope, Keyring, is_sealed
from privacy.sealed_files import file_kek, rewrap_file
from server.store import audit, audit_key, rbac
from server.store.models import Checkpoint, ModelVersion, Principal

logger = logging.getLogger(__name__)

PERMISSION = "key:manage"


@dataclass
class RotationReport:
    """What ``rotate`` rewrapped, and under which KEK."""

    kek_id: str
    checkpoints: int = 0
    artifacts: int = 0
    files: int = 0
    missing: list[str] = field(default_factory=list)


def rotate(
    *, session: Session, actor: Principal, keyring: Keyring, extra_paths: Iterable[Path] = ()
) -> RotationReport:
    """Rewrap every sealed envelope the store knows of (and under ``extra_paths``) under the
    keyring's active KEK; audited as ``keys.rotate`` (needs ``key:manage``)."""
    rbac.authorize(session, principal=actor, permission=PERMISSION, target="keyring")
    report = RotationReport(kek_id=keyring.active_id)
    before: Counter[str] = Counter()
    for row in session.scalars(select(Checkpoint)):
        if is_sealed(row.blob):
            before[Envelope.parse(row.blob).kek_id] += 1
            rewrapped = keyring.rewrap(row.blob)
            if rewrapped != row.blob:
                row.blob = rewrapped
                report.checkpoints += 1
    for path in _artifact_files(session, missing=report.missing):
        kek = file_kek(path)
        if kek is not None:
            before[kek] += 1
            report.artifacts += rewrap_file(path, keyring=keyring)
    for path in _sealed_files([*_store_files(session), *extra_paths]):
        kek = file_kek(path)
        if kek is not None:
            before[kek] += 1
            report.files += rewrap_file(path, keyring=keyring)
    audit.append(
        session,
        actor=actor.name,
        action="keys.rotate",
        target=f"kek:{keyring.active_id}",
        details={
            "previous": dict(before),
            "checkpoints": report.checkpoints,
            "artifacts": report.artifacts,
            "files": report.files,
            "missing_artifacts": len(report.missing),
        },
    )
    logger.info(
        "rewrapped %d checkpoint(s), %d artifact(s), %d file(s) under KEK %s",
        report.checkpoints,
        report.artifacts,
        report.files,
        keyring.active_id,
    )
    return report


def usage(*, session: Session, extra_paths: Iterable[Path] = ()) -> Counter[str]:
    """How many envelopes each KEK wraps: checkpoints, artifacts and files under the paths."""
    counts: Counter[str] = Counter()
    for blob in session.scalars(select(Checkpoint.blob)):
        if is_sealed(blob):
            counts[Envelope.parse(blob).kek_id] += 1
    files = _sealed_files([*_store_files(session), *extra_paths])
    for path in [*_artifact_files(session, missing=[]), *files]:
        kek = file_kek(path)
        if kek is not None:
            counts[kek] += 1
    return counts


def record_retirement(*, session: Session, actor: Principal, kek_id: str) -> None:
    """Audit ``keys.retire`` (needs ``key:manage``); the caller deletes the KEK afterwards."""
    rbac.authorize(session, principal=actor, permission=PERMISSION, target=f"kek:{kek_id}")
    audit.append(session, actor=actor.name, action="keys.retire", target=f"kek:{kek_id}")


def _store_files(session: Session) -> list[Path]:
    """The files the store itself keeps outside the database: its audit (HMAC) key."""
    bind = session.get_bind()
    assert isinstance(bind, Engine | Connection)
    path = audit_key.locator_for(bind).path
    return [path] if path is not None and path.is_file() else []


def _artifact_files(session: Session, *, missing: list[str]) -> Iterator[Path]:
    """Each registered artifact and its external-data side file, where they exist."""
    seen: set[Path] = set()
    for artifact in session.scalars(select(ModelVersion.artifact_path)):
        path = Path(artifact)
        for candidate in (path, path.with_name(path.name + ".data")):
            if candidate in seen:
                continue
            seen.add(candidate)
            if candidate.is_file():
                yield candidate
            elif candidate == path:
                missing.append(str(path))


def _sealed_files(paths: Iterable[Path]) -> Iterator[Path]:
    seen: set[Path] = set()
    for root in paths:
        candidates = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in candidates:
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            if path.is_file() and file_kek(path) is not None:
                yield path
