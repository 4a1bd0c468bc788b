"""Stores to test against: a SQLite file per test, and a PostgreSQL schema per test.

PostgreSQL tests run against ``FEDWARDEN_TEST_POSTGRES_URL`` (default: the
server on 127.0.0.1:5432, database ``test``). Each gets a schema of its own
(``search_path`` set through the connection's options) that is dropped
afterwards; they skip, saying why, only where no server answers.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from client.contract.report import FitReport
from server.run_events import RoundRecord
from server.store import runs
from server.store.engine import Store, open_store
from server.store.governance import bootstrap_admin, enroll_principal
from server.store.models import Principal

POSTGRES_URL = os.environ.get(
    "FEDWARDEN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def _conninfo() -> str:
    url = make_url(POSTGRES_URL)
    parts = {
        "host": url.host or "127.0.0.1",
        "port": url.port or 5432,
        "dbname": url.database,
        "user": url.username or "postgres",
        "password": url.password,
        "connect_timeout": 3,
    }
    return " ".join(f"{key}={value}" for key, value in parts.items() if value is not None)


@cache
def postgres_unavailable() -> str | None:
    """Why PostgreSQL tests cannot run here, or ``None`` if the server answers."""
    try:
        with psycopg.connect(_conninfo(), autocommit=True) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        url = make_url(POSTGRES_URL)
        return f"no PostgreSQL server answers at {url.host}:{url.port or 5432}: {first}"
    return None


@contextmanager
def postgres_schema_url() -> Iterator[str]:
    """A URL whose connections use a fresh schema; the schema is dropped afterwards."""
    reason = postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)
    schema = f"fw_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_conninfo(), autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_conninfo(), autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextmanager
def backend_url(backend: str, directory: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'store.db'}"
        return
    with postgres_schema_url() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store's URL on each backend (ids ``sqlite`` and ``postgres``)."""
    with backend_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture(scope="module", params=BACKENDS)
def module_store_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Like ``store_url``, shared by a module's tests (for large parametrised tables)."""
    with backend_url(request.param, tmp_path_factory.mktemp("store")) as url:
        yield url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL store URL only (tests of what SQLite cannot show)."""
    with postgres_schema_url() as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An open store, migrated to the newest revision."""
    opened = open_store(store_url)
    yield opened
    opened.dispose()


@pytest.fixture
def admin(store: Store) -> Principal:
    """The store's first admin (bootstrapped)."""
    with store.session() as session:
        principal, _ = bootstrap_admin(session=session)
    return principal


@pytest.fixture
def principal_factory(store: Store, admin: Principal) -> Callable[..., tuple[Principal, str]]:
    """Make a principal with one role and an API key: ``make(name, role, institution=None)``."""

    def make(name: str, role: str, institution: str | None = None) -> tuple[Principal, str]:
        with store.session() as session:  # enrolled by the coordinator's owner
            principal, token = enroll_principal(
                session=session, name=name, role=role, institution=institution
            )
        return principal, token

    return make


def record_of(number: int, spent: dict[str, float]) -> RoundRecord:
    return RoundRecord(
        round=number,
        loss=0.5,
        accuracy=0.8,
        accuracy_by_institution={},
        epsilon=spent,
        participants=sorted(spent),
        reports=[
            FitReport(
                institution=name,
                round=number,
                epsilon=epsilon,
                delta=1e-5,
                steps=10,
                noise_multiplier=1.0,
                sample_rate=0.1,
                max_grad_norm=1.0,
            )
            for name, epsilon in spent.items()
        ],
    )


@pytest.fixture
def operator(principal_factory):
    return principal_factory("olga", "operator")[0]


@pytest.fixture
def two_runs(store, operator):
    """Run a: Cleveland 0.2 then 0.5, Hungary 0.3; run b: Cleveland 0.4."""
    with store.session() as session:
        a = runs.start_run(
            session=session,
            actor=operator,
            name="a",
            config={},
            institutions=["Cleveland", "Hungary"],
        ).id
        runs.record_round(
            session=session,
            actor=operator,
            run_id=a,
            record=record_of(1, {"Cleveland": 0.2, "Hungary": 0.3}),
        )
        runs.record_round(
            session=session, actor=operator, run_id=a, record=record_of(2, {"Cleveland": 0.5})
        )
        b = runs.start_run(session=session, actor=operator, name="b", config={}).id
        runs.record_round(
            session=session, actor=operator, run_id=b, record=record_of(1, {"Cleveland": 0.4})
        )
    return a, b
