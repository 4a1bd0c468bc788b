"""``fedwarden audit``: verify, export, tail and sign the tamper-evident audit log."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from simulations.cli.common import ApiKey, DatabaseUrl, authenticated, console

audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)

KeyFile = Annotated[Path, typer.Option("--key", help="The coordinator's Ed25519 key (PEM).")]


@audit_app.command("verify")
def verify_command(
    receipt: Annotated[
        Path | None, typer.Option(help="A receipt from `audit checkpoint` the log must still hold.")
    ] = None,
    public_key: Annotated[
        str | None,
        typer.Option(
            help="The coordinator's public key (hex, or a file) the receipt must carry "
            "(default: FEDWARDEN_AUDIT_PUBLIC_KEY, the store's pinned key)."
        ),
    ] = None,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Walk the hash chain; exit non-zero naming the first broken event (needs audit:read)."""
    from server.errors import AuditChainError
    from server.store.anchoring import Receipt, pinned_public_key
    from server.store.oversight import verify_audit_log
    from server.store.settings import StoreSettings

    anchor = Receipt.from_json(_read(receipt)) if receipt is not None else None
    pinned = pinned_public_key(public_key or StoreSettings.load(database_url).audit_public_key)
    with authenticated(database_url, api_key) as (session, actor):
        report = verify_audit_log(session=session, actor=actor, receipt=anchor, public_key=pinned)
    if report.broken is not None:
        raise AuditChainError(
            f"audit chain broken at event {report.broken.seq}: {report.broken.reason}",
            seq=report.broken.seq,
        )
    anchored = f", holds receipt event {anchor.seq}" if anchor is not None else ""
    typer.echo(f"chain intact: {report.events} events, head {report.head_hash}{anchored}")


@audit_app.command("export")
def export_command(
    out: Annotated[Path | None, typer.Option(help="A file to write (default: stdout).")] = None,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Write every event as JSON Lines (needs audit:read)."""
    from server.store.oversight import export_audit_log

    with authenticated(database_url, api_key) as (session, actor):
        if out is None:
            export_audit_log(session=session, actor=actor, out=sys.stdout)
            return
        with out.open("w", encoding="utf-8") as handle:
            count = export_audit_log(session=session, actor=actor, out=handle)
    console.print(f"wrote {count} events to {out}")


@audit_app.command("tail")
def tail_command(
    lines: Annotated[int, typer.Option("-n", "--lines", min=1, help="How many events.")] = 20,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Show the newest events (needs audit:read)."""
    from server.store.oversight import tail_audit_log

    with authenticated(database_url, api_key) as (session, actor):
        events = tail_audit_log(session=session, actor=actor, limit=lines)
    table = Table("seq", "time (UTC)", "actor", "action", "target", "outcome", "details")
    for column in table.columns[:-1]:
        column.no_wrap = True
    for event in events:
        table.add_row(
            str(event["seq"]),
            event["time"].replace("T", " ")[:19],
            event["actor"],
            event["action"],
            event["target"] or "",
            event["outcome"],
            json.dumps(event["details"], sort_keys=True),
        )
    console.print(table)


@audit_app.command("checkpoint")
def checkpoint_command(
    key: KeyFile,
    out: Annotated[
        Path | None, typer.Option(help="Write the receipt here (default: stdout).")
    ] = None,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Sign the log's head with the coordinator's key, for a receipt (needs audit:checkpoint).

    The receipt can be handed to anyone; `audit verify --receipt` later shows
    that the log still holds the event it names.
    """
    from privacy.keyring import load_keyring
    from server.store.anchoring import load_signing_key
    from server.store.oversight import sign_audit_head

    private_key = load_signing_key(key, keyring=load_keyring())
    with authenticated(database_url, api_key) as (session, actor):
        receipt = sign_audit_head(session=session, actor=actor, private_key=private_key)
    if out is None:
        typer.echo(receipt.to_json())
        return
    out.write_text(receipt.to_json() + "\n", encoding="utf-8")
    console.print(f"signed event {receipt.seq} (head {receipt.head_hash[:16]}…); receipt in {out}")


@audit_app.command("keygen")
def keygen_command(key: KeyFile) -> None:
    """Create the coordinator's Ed25519 signing key (mode 0600); prints only the public key."""
    from privacy.keyring import load_keyring
    from server.store.anchoring import generate_signing_key

    public = generate_signing_key(key, keyring=load_keyring())
    console.print(f"wrote a new signing key to {key}; public key {public}")
    typer.echo(f"pin it where receipts are verified: FEDWARDEN_AUDIT_PUBLIC_KEY={public}")


def _read(path: Path) -> str:
    from privacy.errors import ConfigError

    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
