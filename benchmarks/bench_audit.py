"""Audit appends per second on SQLite and PostgreSQL, one writer and several threads.

Each append is its own transaction (take the audit lock, read the head, hash,
insert, commit), as every audited action in fedwarden is. Run::

    python benchmarks/bench_audit.py [--events 2000] [--threads 4]

PostgreSQL is measured in a throw-away schema of ``--postgres-url`` (default:
the server on 127.0.0.1:5432, database ``test``) and skipped, saying so, when
no server answers.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from server.store import audit
from server.store.engine import Store, open_store

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def append_many(store: Store, count: int, *, actor: str) -> None:
    """``count`` appends, one transaction each."""
    for index in range(count):
        with store.session() as session:
            audit.append(
                session,
                actor=actor,
                action="bench.append",
                target=f"item:{index}",
                details={"index": index, "epsilon": 0.01 * index},
            )


def measure(store: Store, *, events: int, threads: int) -> float:
    """Appends per second with ``threads`` writers sharing ``events`` appends."""
    share = events // threads
    workers = [
        threading.Thread(target=append_many, args=(store, share), kwargs={"actor": f"w{n}"})
        for n in range(threads)
    ]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return share * threads / (time.perf_counter() - started)


def run(url: str, *, label: str, events: int, threads: int) -> None:
    """Measure one backend and print its lines."""
    store = open_store(url)
    try:
        append_many(store, 50, actor="warm-up")
        single = measure(store, events=events, threads=1)
        several = measure(store, events=events, threads=threads)
        with store.session() as session:
            report = audit.verify_chain(session)
        started = time.perf_counter()
        with store.session() as session:
            audit.verify_chain(session)
        verify_rate = report.events / (time.perf_counter() - started)
    finally:
        store.dispose()
    state = "intact" if report.broken is None else f"BROKEN at {report.broken.seq}"
    print(f"{label:<11} 1 writer   {single:8.0f} appends/s")
    print(f"{label:<11} {threads} threads  {several:8.0f} appends/s")
    print(f"{label:<11} verify     {verify_rate:8.0f} events/s ({report.events} events, {state})")


@contextmanager
def postgres_schema(url: str) -> Iterator[str | None]:
    """A URL on a fresh schema (dropped afterwards), or ``None`` if no server answers."""
    parsed = make_url(url)
    conninfo = (
        f"host={parsed.host} port={parsed.port or 5432} dbname={parsed.database} "
        f"user={parsed.username or 'postgres'} connect_timeout=3"
        + (f" password={parsed.password}" if parsed.password else "")
    )
    schema = f"fw_bench_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.Error as exc:
        print(f"postgresql  skipped: no server answers at {parsed.host}:{parsed.port} ({exc})")
        yield None
        return
    try:
        yield parsed.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False
        )
    finally:
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="appends per measurement")
    parser.add_argument("--threads", type=int, default=4, help="writers in the threaded run")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'bench.db'}"
        run(url, label="sqlite", events=args.events, threads=args.threads)
    with postgres_schema(args.postgres_url) as url:
        if url is not None:
            run(url, label="postgresql", events=args.events, threads=args.threads)


if __name__ == "__main__":
    main()
