"""``fedwarden admin``: institutions, principals, roles and API keys."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from simulations.cli.common import ApiKey, DatabaseUrl, authenticated, console, opened

admin_app = typer.Typer(
    help="Manage institutions, principals, roles and keys.", no_args_is_help=True
)

Role = Annotated[str, typer.Argument(help="admin, operator, institution, auditor or consumer.")]
ExpiresDays = Annotated[float, typer.Option(help="The key's lifetime in days.")]
NoExpiry = Annotated[bool, typer.Option("--no-expiry", help="A key that never expires.")]


@admin_app.command("enroll")
def enroll_command(
    name: Annotated[str, typer.Argument(help="The new principal's name.")],
    role: Role,
    institution: Annotated[
        str | None, typer.Option(help="The institution it belongs to (institution role).")
    ] = None,
    kind: Annotated[str, typer.Option(help="person or service.")] = "person",
    expires_days: ExpiresDays = 90.0,
    no_expiry: NoExpiry = False,
    database_url: DatabaseUrl = None,
) -> None:
    """As the coordinator's owner: create a principal with any role and print its first key once.

    Needs no API key but the store's audit key (readable only by the
    coordinator's user): this is how an operator or auditor gets a key that no
    admin has held.
    """
    from server.store.audit_key import locator_for
    from server.store.governance import enroll_principal

    with opened(database_url, upgrade=False) as store:
        locator_for(store.engine).require_key()
        with store.session() as session:
            _, token = enroll_principal(
                session=session,
                name=name,
                role=role,
                kind=kind,
                institution=institution,
                expires_days=None if no_expiry else expires_days,
            )
    console.print(f"enrolled {name!r} as {role}; its API key, shown only this once:")
    typer.echo(token)


@admin_app.command("init")
def init_command(
    database_url: DatabaseUrl = None,
    name: Annotated[str, typer.Option(help="The first admin's name.")] = "admin",
) -> None:
    """Create the store if needed and its first admin; print the admin's API key once."""
    from server.store.governance import bootstrap_admin

    with opened(database_url, create=True) as store:
        with store.session() as session:
            admin, token = bootstrap_admin(session=session, name=name)
            admin_name = admin.name
        url = store.url
    console.print(f"created admin {admin_name!r} in the store {url}")
    console.print("its API key, shown only this once (keep it secret, e.g. in FEDWARDEN_API_KEY):")
    typer.echo(token)


@admin_app.command("create-institution")
def create_institution_command(
    name: Annotated[str, typer.Argument(help="The institution's name.")],
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Add an institution to the federation (needs institution:manage)."""
    from server.store.governance import create_institution

    with authenticated(database_url, api_key) as (session, actor):
        create_institution(session=session, actor=actor, name=name)
    console.print(f"created institution {name!r}")


@admin_app.command("create-principal")
def create_principal_command(
    *,
    name: Annotated[str, typer.Argument(help="The principal's name.")],
    role: Annotated[str, typer.Option(help="Its first role.")],
    institution: Annotated[
        str | None, typer.Option(help="Its institution (none: the coordinator's).")
    ] = None,
    kind: Annotated[str, typer.Option(help="person or service.")] = "person",
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Create a person or service account with a role (needs principal:manage)."""
    from server.store.governance import create_principal

    with authenticated(database_url, api_key) as (session, actor):
        create_principal(
            session=session, actor=actor, name=name, role=role, kind=kind, institution=institution
        )
    console.print(f"created {kind} {name!r} with role {role!r}")


@admin_app.command("grant")
def grant_command(
    principal: Annotated[str, typer.Argument(help="Who gets the role.")],
    role: Role,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Grant a role to a principal (needs principal:manage)."""
    from server.store.governance import grant_role

    with authenticated(database_url, api_key) as (session, actor):
        grant_role(session=session, actor=actor, principal=principal, role=role)
    console.print(f"granted {role!r} to {principal!r}")


@admin_app.command("revoke")
def revoke_command(
    principal: Annotated[str, typer.Argument(help="Who loses the role.")],
    role: Role,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Take a role from a principal (needs principal:manage)."""
    from server.store.governance import revoke_role

    with authenticated(database_url, api_key) as (session, actor):
        revoke_role(session=session, actor=actor, principal=principal, role=role)
    console.print(f"revoked {role!r} from {principal!r}")


@admin_app.command("issue-key")
def issue_key_command(
    principal: Annotated[str, typer.Argument(help="Whose key.")],
    expires_days: ExpiresDays = 90.0,
    no_expiry: NoExpiry = False,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Issue an API key for a principal and print it once (needs key:manage).

    Refused for another principal holding a role you do not hold: such a
    principal's key comes from `admin enroll`, run by the coordinator's owner.
    """
    from server.store.governance import issue_key

    with authenticated(database_url, api_key) as (session, actor):
        token, row = issue_key(
            session=session,
            actor=actor,
            principal=principal,
            expires_days=None if no_expiry else expires_days,
        )
        prefix, expires = row.prefix, row.expires_at
    until = f"until {expires:%Y-%m-%d %H:%M} UTC" if expires is not None else "until revoked"
    console.print(f"issued key {prefix} for {principal!r}, valid {until}; shown only this once:")
    typer.echo(token)


@admin_app.command("rotate-key")
def rotate_key_command(
    prefix: Annotated[str, typer.Argument(help="The old key's prefix (the part after fw_).")],
    overlap_hours: Annotated[
        float, typer.Option(help="How long the old key keeps working beside the new one.")
    ] = 24.0,
    expires_days: Annotated[
        float | None,
        typer.Option(help="The new key's lifetime in days (default: the old key's lifetime)."),
    ] = None,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Issue a new key for the same principal; the old one expires after the overlap
    (needs key:manage). The new key is printed once."""
    from server.store.governance import rotate_key

    with authenticated(database_url, api_key) as (session, actor):
        token, row, old = rotate_key(
            session=session,
            actor=actor,
            prefix=prefix,
            overlap_hours=overlap_hours,
            expires_days=expires_days,
        )
        new_prefix, old_expires = row.prefix, old.expires_at
    console.print(
        f"issued key {new_prefix}; key {prefix} stops working at {old_expires:%Y-%m-%d %H:%M} UTC. "
        "The new key, shown only this once:"
    )
    typer.echo(token)


@admin_app.command("revoke-key")
def revoke_key_command(
    prefix: Annotated[str, typer.Argument(help="The key's prefix (the part after fw_).")],
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Revoke an API key; it stops working at once (needs key:manage)."""
    from server.store.governance import revoke_key

    with authenticated(database_url, api_key) as (session, actor):
        revoke_key(session=session, actor=actor, prefix=prefix)
    console.print(f"revoked key {prefix}")


@admin_app.command("list")
def list_command(database_url: DatabaseUrl = None, api_key: ApiKey = None) -> None:
    """List institutions and principals with their roles and keys (needs principal:read)."""
    from server.store.governance import directory

    with authenticated(database_url, api_key) as (session, actor):
        listing = directory(session=session, actor=actor)
    console.print(f"institutions: {', '.join(listing.institutions) or '(none)'}")
    table = Table("principal", "kind", "institution", "roles", "active keys (expiry, UTC)")
    for item in listing.principals:
        table.add_row(
            item.name,
            item.kind,
            item.institution or "(coordinator)",
            ", ".join(item.roles) or "-",
            ", ".join(
                f"{prefix} ({'never' if expiry is None else f'{expiry:%Y-%m-%d}'})"
                for prefix, expiry in zip(item.active_keys, item.key_expiry, strict=True)
            )
            or "-",
        )
    console.print(table)
