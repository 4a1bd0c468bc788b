"""``fedwarden keys``: the key-encryption keys that seal checkpoints, artifacts and keys at rest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from simulations.cli.common import ApiKey, DatabaseUrl, authenticated, console

keys_app = typer.Typer(
    help="Key-encryption keys for encryption at rest: create, rotate, retire.",
    no_args_is_help=True,
)

KeyringDir = Annotated[
    Path,
    typer.Option(
        "--keyring",
        envvar="FEDWARDEN_KEYRING",
        help="The keyring folder (mode 0700; one 0600 file per KEK).",
        show_envvar=True,
    ),
]
ExtraPaths = Annotated[
    list[Path] | None,
    typer.Option(
        "--path",
        help="Also sealed files outside the store: a signing key, a PKI folder (repeatable).",
    ),
]


@keys_app.command("create")
def create_command(
    keyring: KeyringDir,
    kek_id: Annotated[str | None, typer.Option("--id", help="Its id (default: random).")] = None,
) -> None:
    """Add a KEK to the keyring (the active one if there is none yet); print its id."""
    from privacy.keyring import active_id, create_kek

    info = create_kek(keyring, kek_id=kek_id, activate=active_id(keyring) is None)
    state = "active: new artifacts are sealed with it" if info.active else "not active"
    console.print(f"created KEK {info.kek_id} in {keyring} ({state})")


@keys_app.command("rotate")
def rotate_command(
    keyring: KeyringDir,
    path: ExtraPaths = None,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Create a new active KEK and rewrap every data key under it, ciphertexts unchanged
    (needs key:manage; audited as keys.rotate)."""
    from privacy.keyring import EncryptionSettings, create_kek, load_keyring
    from server.store.sealing import rotate

    info = create_kek(keyring, activate=True)
    ring = load_keyring(EncryptionSettings.load(keyring=keyring))
    assert ring is not None
    with authenticated(database_url, api_key) as (session, actor):
        report = rotate(session=session, actor=actor, keyring=ring, extra_paths=path or [])
    console.print(
        f"KEK {info.kek_id} is active; rewrapped {report.checkpoints} checkpoint(s), "
        f"{report.artifacts} artifact(s) and {report.files} file(s)"
    )
    for missing in report.missing:
        console.print(f"[yellow]registered artifact missing:[/] {missing}")
    console.print("retire the old KEK with `fedwarden keys retire ID` once backups have rotated")


@keys_app.command("retire")
def retire_command(
    kek_id: Annotated[str, typer.Argument(help="The KEK to delete.")],
    keyring: KeyringDir,
    path: ExtraPaths = None,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Delete a KEK that no checkpoint, artifact or given file needs any more (needs
    key:manage; audited as keys.retire)."""
    from privacy.errors import ConfigError
    from privacy.keyring import retire_kek
    from server.store.sealing import record_retirement, usage

    with authenticated(database_url, api_key) as (session, actor):
        needed = usage(session=session, extra_paths=path or []).get(kek_id, 0)
        if needed:
            raise ConfigError(
                f"KEK {kek_id!r} still wraps {needed} data key(s); run `fedwarden keys rotate` "
                "first",
                kek_id=kek_id,
            )
        record_retirement(session=session, actor=actor, kek_id=kek_id)
        retire_kek(keyring, kek_id)
    console.print(f"retired KEK {kek_id}: its key file is overwritten and deleted")


@keys_app.command("status")
def status_command(
    keyring: KeyringDir,
    path: ExtraPaths = None,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """The keyring's KEKs (never their keys) and how many envelopes each wraps."""
    from privacy.keyring import list_keks
    from server.store.sealing import usage

    with authenticated(database_url, api_key) as (session, _actor):
        counts = usage(session=session, extra_paths=path or [])
    table = Table("KEK", "created", "active", "envelopes")
    for info in list_keks(keyring):
        table.add_row(
            info.kek_id, info.created, "yes" if info.active else "", str(counts[info.kek_id])
        )
    console.print(table)
    unknown = sorted(set(counts) - {info.kek_id for info in list_keks(keyring)})
    for kek_id in unknown:
        console.print(f"[red]{counts[kek_id]} envelope(s) sealed with KEK {kek_id}, not here[/]")
