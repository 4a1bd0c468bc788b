"""Model artifacts kept in the store, content-addressed by the SHA-256 of their plaintext.

The bytes kept are what ``deploy.artifacts.seal_artifact`` returns (sealed when
the store has a keyring); this module stores and returns them as they are and
never opens them: ``deploy.artifacts.open_artifact`` decrypts and checks the
digest on the way out. A version names its artifact by ``artifact_sha256``; two
versions of the same bytes share one row.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from privacy.envelope import is_sealed
from privacy.errors import ConfigError
from server.store.models import ModelArtifact

_HEX = frozenset("0123456789abcdef")


def save_artifact(*, session: Session, sha256: str, blob: bytes, size: int) -> bool:
    """Keep ``blob`` under ``sha256`` unless the store already has that artifact.

    Called in the registering transaction (its audit event covers it). A sealed
    ``blob`` replaces a plaintext one kept before the store had a keyring, so
    sealing, once on, covers every artifact registered again. Returns whether a
    row was added or replaced.
    """
    if len(sha256) != 64 or not set(sha256) <= _HEX:
        raise ConfigError("an artifact's sha256 must be 64 lowercase hex characters")
    if not blob or size < 0:
        raise ConfigError("an artifact must have bytes")
    existing = session.get(ModelArtifact, sha256)
    if existing is not None:
        if is_sealed(blob) and not is_sealed(existing.blob):
            existing.blob = blob
            session.flush()
            return True
        return False
    session.add(ModelArtifact(sha256=sha256, size=size, blob=blob))
    session.flush()
    return True


def artifact_blob(*, session: Session, sha256: str) -> bytes | None:
    """The kept bytes of the artifact with this plaintext digest, or ``None``.

    For the inference service loading what the registry tells it to serve: not
    audited per load (the service audits each version it loads).
    """
    return session.scalar(select(ModelArtifact.blob).where(ModelArtifact.sha256 == sha256))


def has_artifact(*, session: Session, sha256: str) -> bool:
    found = session.scalar(select(ModelArtifact.sha256).where(ModelArtifact.sha256 == sha256))
    return found is not None
