"""``fedwarden pki``: the consortium's CA, the coordinator's TLS certificate, node keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from simulations.cli.common import ApiKey, DatabaseUrl, authenticated, console

pki_app = typer.Typer(
    help="The consortium's CA, the coordinator's TLS certificate, node keys.", no_args_is_help=True
)


@pki_app.command("init")
def pki_init_command(
    out: Annotated[Path, typer.Option("--out", help="Folder for ca.crt/.key and server.crt/.key.")],
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="An address the coordinator serves on (IP or DNS name); repeat. "
            "127.0.0.1 and localhost are always added (the operator address).",
        ),
    ] = None,
    days: Annotated[int, typer.Option(help="How long the server certificate lasts.")] = 825,
) -> None:
    """Create the consortium CA and the coordinator's TLS certificate and key."""
    from privacy.errors import ConfigError
    from privacy.keyring import load_keyring
    from privacy.pki import create_ca, issue_server_certificate

    if (out / "ca.key").exists():
        raise ConfigError(f"{out} holds a CA already; refusing to overwrite it")
    keyring = load_keyring()  # keys sealed at rest when FEDWARDEN_KEYRING / FEDWARDEN_KEK is set
    ca = create_ca(out_dir=out, keyring=keyring)
    try:
        server = issue_server_certificate(
            ca=ca,
            # the operator APIs listen on loopback: the certificate must name it too
            addresses=list(dict.fromkeys([*(host or []), "127.0.0.1", "localhost"])),
            out_dir=out,
            days=days,
            keyring=keyring,
        )
    except ConfigError:
        # Leave no half-made CA behind: the next try would refuse to overwrite it.
        ca.private_key.unlink(missing_ok=True)
        ca.certificate.unlink(missing_ok=True)
        raise
    console.print(f"CA certificate {ca.certificate} (give it to every institution)")
    console.print(f"CA key {ca.private_key} (keep it offline)")
    console.print(f"coordinator certificate {server.certificate} and key {server.private_key}")


@pki_app.command("node")
def pki_node_command(
    *,
    institution: Annotated[str, typer.Option("--institution", help="The node's institution.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for NAME.key and NAME.pub.")],
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key", help="Register this existing public key instead of making a pair."
        ),
    ] = None,
    register: Annotated[bool, typer.Option(help="Register the public key in the store.")] = True,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Make an institution's node key pair and register its public key with the coordinator
    (needs node:register for one's own institution, or institution:manage)."""
    from privacy.errors import ConfigError
    from privacy.keyring import load_keyring
    from privacy.pki import generate_node_key
    from server.store.nodes import register_node_key

    if public_key is not None:
        try:
            line = public_key.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the public key {public_key}: {exc.strerror}") from None
    made: list[Path] = []
    if public_key is None:
        private, line = generate_node_key(
            out_dir=out, institution=institution, keyring=load_keyring()
        )
        made = [private, private.with_suffix(".pub")]
    if register:
        try:
            with authenticated(database_url, api_key) as (session, actor):
                info = register_node_key(
                    session=session, actor=actor, institution=institution, public_key=line
                )
        except BaseException:
            for path in made:  # a refused registration leaves no key pair behind
                path.unlink(missing_ok=True)
            raise
    if made:
        console.print(f"node private key {made[0]} (mode 0600; it never leaves the institution)")
        console.print(f"node public key {made[1]}")
    if register:
        console.print(f"registered {info.fingerprint} for {info.institution}")


@pki_app.command("nodes")
def pki_nodes_command(
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List registered node keys (needs principal:read)."""
    from server.store.nodes import list_node_keys

    with authenticated(database_url, api_key) as (session, actor):
        keys = list_node_keys(session=session, actor=actor)
    rows = [
        {"institution": k.institution, "fingerprint": k.fingerprint, "revoked": k.revoked,
         "created_at": k.created_at.isoformat(), "created_by": k.created_by}
        for k in keys
    ]  # fmt: skip
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for row in rows:
        status = "revoked" if row["revoked"] else "active"
        console.print(f"{row['institution']}\t{row['fingerprint']}\t{status}")


@pki_app.command("revoke")
def pki_revoke_command(
    which: Annotated[
        str, typer.Argument(help="SHA256:... of one node key, or an institution's name (all).")
    ],
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Revoke node keys; a running coordinator unregisters them from its SuperLink at once."""
    from server.store.nodes import revoke_node_keys

    with authenticated(database_url, api_key) as (session, actor):
        revoked = revoke_node_keys(session=session, actor=actor, name_or_fingerprint=which)
        fingerprints = [info.fingerprint for info in revoked]
    for fingerprint in fingerprints:
        console.print(f"revoked {fingerprint}")
