"""The console's process settings, built in the entry point and handed to ``create_app``."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsoleSettings(BaseSettings):
    """Where the store is, and how long a signed-in session lasts.

    Read from ``FEDWARDEN_CONSOLE_*`` variables when not given.
    """

    model_config = SettingsConfigDict(env_prefix="FEDWARDEN_CONSOLE_", frozen=True)

    database_url: str
    session_ttl_s: float = Field(default=8 * 3600.0, gt=0)
    max_sessions: int = Field(default=10_000, ge=1)
    page_size: int = Field(default=50, ge=1, le=500)
