"""Where the governance store lives and how patiently to talk to it.

``StoreSettings`` is read from ``FEDWARDEN_*`` environment variables (a
``FEDWARDEN_DATABASE_URL`` names the database) and built in the entry point,
then handed to ``open_store``. SQLite needs no set-up; PostgreSQL is for real
coordinators::

    sqlite:///runs/2026-11-01/fedwarden.db
    postgresql+psycopg://fedwarden@db.internal:5432/governance
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from privacy.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///fedwarden.db"

_BACKENDS = ("sqlite", "postgresql")
_DEFAULT_DRIVERS = {"postgresql": "psycopg", "postgres": "psycopg"}


class StoreSettings(BaseSettings):
    """The store's URL, connection pool and timeouts, and where its audit key lives.

    ``audit_key_file`` (``FEDWARDEN_AUDIT_KEY_FILE``) names the HMAC key the
    audit chain is keyed with; by default each store has one in
    ``audit_key_dir``. ``audit_public_key`` (``FEDWARDEN_AUDIT_PUBLIC_KEY``) pins
    the coordinator's Ed25519 public key that receipts must be signed with: 64
    hex characters, or the path of a file holding them.
    """

    model_config = SettingsConfigDict(env_prefix="FEDWARDEN_", extra="ignore", frozen=True)

    database_url: str = DEFAULT_DATABASE_URL
    connect_timeout_s: float = Field(default=5.0, gt=0)
    busy_timeout_s: float = Field(default=30.0, gt=0)
    pool_size: int = Field(default=5, ge=1)
    max_overflow: int = Field(default=10, ge=0)
    pool_timeout_s: float = Field(default=30.0, gt=0)
    echo_sql: bool = False
    audit_key_file: str | None = None
    audit_key_dir: str = "~/.config/fedwarden/audit-keys"
    audit_checkpoint_every: int = Field(default=100, ge=1)
    audit_checkpoint_interval_s: float = Field(default=600.0, gt=0)
    audit_public_key: str | None = None

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return normalize_url(value)

    @classmethod
    def load(
        cls, database_url: str | None = None, *, default_url: str | None = None
    ) -> StoreSettings:
        """Settings from an explicit URL, else the environment, else ``default_url``.

        Parameters
        ----------
        database_url : str, optional
            A URL given on the command line; it wins over everything.
        default_url : str, optional
            The caller's default when neither the argument nor
            ``FEDWARDEN_DATABASE_URL`` names a database (``fedwarden simulate``
            passes a file in its output folder); otherwise ``sqlite:///fedwarden.db``.

        Raises
        ------
        ConfigError
            The URL is malformed or names an unsupported database, or another
            setting is out of range.
        """
        overrides: dict[str, Any] = {}
        if database_url is not None:
            overrides["database_url"] = database_url
        try:
            settings = cls(**overrides)
            if "database_url" not in settings.model_fields_set and default_url is not None:
                settings = settings.model_copy(update={"database_url": normalize_url(default_url)})
        except ValidationError as exc:
            problems = "; ".join(_describe(error) for error in exc.errors())
            raise ConfigError(f"store settings are invalid: {problems}") from None
        return settings

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.database_url.split(":", 1)[0].split("+", 1)[0]


def normalize_url(url: str) -> str:
    """Check a database URL and give PostgreSQL URLs the psycopg driver.

    Raises
    ------
    ConfigError
        The URL cannot be parsed, or names a database other than SQLite or PostgreSQL.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url.strip())
    except ArgumentError:
        raise ConfigError(
            f"malformed database URL {url!r}: expected sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST:PORT/DATABASE"
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgres":
        backend = "postgresql"
    if backend not in _BACKENDS:
        raise ConfigError(
            f"unsupported database {parsed.drivername!r} in the store URL; "
            f"use one of: {', '.join(_BACKENDS)}"
        )
    driver = driver or _DEFAULT_DRIVERS.get(backend, "")
    if backend == "postgresql" and (not parsed.host or not parsed.database):
        raise ConfigError("a PostgreSQL store URL needs a host and a database name")
    drivername = f"{backend}+{driver}" if driver else backend
    return parsed.set(drivername=drivername).render_as_string(hide_password=False)


def _describe(error: Any) -> str:
    """One clause for one pydantic error, without pydantic's URL footer."""
    location = ".".join(str(part) for part in error.get("loc", ())) or "settings"
    message = str(error.get("msg", "invalid"))
    return f"{location}: {message.removeprefix('Value error, ')}"
