"""`orderflow codec …`: make a codec key, show which keys this process has, hash a customer id.

Customer data in Temporal is encrypted (orderflow/codec.py). These commands never print a key
other than a new one (`new-key`, for the operator to put in the secret store).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer

from orderflow.errors import OrderflowError

codec_app = typer.Typer(
    help="Customer data encrypted in Temporal: new keys, the keys in use, customer hashes.",
    no_args_is_help=True,
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _fail(err: OrderflowError) -> typer.Exit:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


@codec_app.command("new-key")
def new_key(
    key_id: Annotated[
        str, typer.Option("--id", help="The new key's id (default: k-<UTC date and time>)")
    ] = "",
) -> None:
    """Print a new AES-256 key as ORDERFLOW_CODEC_KEY wants it (<id>:<base64>)."""
    from orderflow.codec import new_key as make

    try:
        key = make(key_id or datetime.now(UTC).strftime("k-%Y%m%d-%H%M%S"))
    except OrderflowError as err:
        raise _fail(err) from err
    typer.echo(key.spec())


@codec_app.command("keys")
def keys(as_json: JsonOpt = False) -> None:
    """The key ids this process encrypts with (current) and still decrypts (old); no secrets."""
    from orderflow.settings import Settings

    try:
        ring = Settings().codec_keyring()
    except OrderflowError as err:
        raise _fail(err) from err
    data = {"current": ring.current.key_id, "old": ring.ids[1:]}
    if as_json:
        typer.echo(json.dumps(data))
    else:
        typer.echo(f"current: {data['current']}")
        typer.echo(f"old:     {', '.join(data['old']) or '(none)'}")


@codec_app.command("customer-hash")
def customer_hash(
    customer_id: Annotated[str, typer.Argument(help="The customer id (e.g. an email)")],
) -> None:
    """The `CustomerId` search attribute of this customer's orders (a keyed hash)."""
    from orderflow.codec import customer_hash as digest
    from orderflow.settings import Settings

    typer.echo(digest(customer_id, Settings().customer_hash_secret))
