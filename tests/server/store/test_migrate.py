"""Migrations: the Alembic head builds exactly the models' schema, on both backends."""

from __future__ import annotations

import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text

from server.errors import StoreError
from server.store import audit, migrate, rbac
from server.store.engine import open_store
from server.store.models import Base, Permission, Role, RolePermission


def test_the_migrated_schema_matches_the_models(store):
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)

    assert differences == []
    assert set(inspect(store.engine).get_table_names()) == {
        *Base.metadata.tables,
        "alembic_version",
    }


def test_the_store_is_at_the_newest_revision(store):
    assert store.revision() == migrate.head_revision()


def test_the_built_in_roles_carry_the_permissions_rbac_defines(store):
    with store.session() as session:
        pairs = session.execute(
            select(Role.name, Permission.name)
            .join(RolePermission, RolePermission.role_id == Role.id)
            .join(Permission, Permission.id == RolePermission.permission_id)
        ).all()
        permissions = set(session.scalars(select(Permission.name)))

    granted: dict[str, set[str]] = {}
    for role, permission in pairs:
        granted.setdefault(role, set()).add(permission)
    assert granted == {role: set(names) for role, names in rbac.ROLE_PERMISSIONS.items()}
    assert permissions == set(rbac.PERMISSIONS)


def test_creating_the_store_is_the_first_audit_event(store):
    with store.session() as session:
        events = audit.tail(session, limit=10)

    assert [(e["seq"], e["action"]) for e in events] == [
        (1, audit.GENESIS_ACTION),
        (2, "store.upgrade"),
    ]
    assert events[1]["details"] == {"from": None, "to": migrate.head_revision()}
    assert events[0]["details"]["unkeyed_events"] == 0


def test_opening_an_up_to_date_store_changes_nothing(store_url):
    open_store(store_url).dispose()

    again = open_store(store_url)
    with again.session() as session:
        count = len(audit.tail(session, limit=10))
    again.dispose()

    assert count == 2  # the genesis and the creation


def test_stores_opened_at_once_are_created_once(store_url):
    errors: list[BaseException] = []

    def open_and_close() -> None:
        try:
            open_store(store_url).dispose()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_and_close) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    store = open_store(store_url)
    with store.session() as session:
        actions = [e["action"] for e in audit.tail(session, limit=10)]
    store.dispose()
    assert actions == [audit.GENESIS_ACTION, "store.upgrade"]


def test_a_store_from_a_newer_release_is_refused(store):
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'ffff9999'"))

    with pytest.raises(StoreError, match="revision ffff9999, which this fedwarden does not know"):
        store.upgrade()
