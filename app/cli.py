"""The `orderflow` command: run the system, and drive orders and reviews from a shell."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from app.cli_support import connect_or_explain
from app.cli_support import run_command as _run
from app.codec_cli import codec_app
from app.deploy_cli import deploy_app
from app.queues_cli import queues_app
from orderflow.contracts.review import ReviewDecision
from orderflow.errors import OrderflowError
from orderflow.money import format_money, to_minor

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from app.client import OrderClient
    from orderflow.settings import Settings

# Commands import what they use inside their bodies: `orderflow --help` (and every command's help)
# must not pay for temporalio, SQLAlchemy, Redis or OpenTelemetry (tests/unit/test_cli.py).

app = typer.Typer(
    help="orderflow: durable order workflows and BullMQ-compatible job queues.",
    no_args_is_help=True,
)
orders_app = typer.Typer(
    help="Start orders and tell them about payments, cancellations, shipments.",
    no_args_is_help=True,
)
reviews_app = typer.Typer(help="List and decide manual reviews.", no_args_is_help=True)
products_app = typer.Typer(help="The catalogue.", no_args_is_help=True)
gateway_app = typer.Typer(help="Script the simulated payment gateway.", no_args_is_help=True)
app.add_typer(orders_app, name="orders")
app.add_typer(reviews_app, name="reviews")
app.add_typer(products_app, name="products")
app.add_typer(gateway_app, name="gateway")
app.add_typer(queues_app, name="queues")
app.add_typer(codec_app, name="codec")
app.add_typer(deploy_app, name="deploy")

T = TypeVar("T")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _settings() -> Settings:
    from orderflow.settings import Settings

    return Settings.from_env()


def _engine() -> Engine:
    from orderflow.db import make_engine

    return make_engine(_settings().db_url)


async def _client() -> OrderClient:
    from app.client import OrderClient
    from orderflow.db import make_engine

    settings = _settings()
    return OrderClient(await connect_or_explain(settings), settings, make_engine(settings.db_url))


def _print(obj: Any, as_json: bool) -> None:
    data = asdict(obj) if hasattr(obj, "__dataclass_fields__") else obj
    if as_json:
        typer.echo(json.dumps(data, default=_json_default, indent=2))
    else:
        typer.echo(_text(data))


def _json_default(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _text(data: Any, indent: str = "") -> str:
    if isinstance(data, dict):
        return "\n".join(
            f"{indent}{k}:\n{_text(v, indent + '  ')}"
            if isinstance(v, list | dict) and v
            else f"{indent}{k}: {_json_default(v)}"
            for k, v in data.items()
        )
    if isinstance(data, list):
        return "\n".join(f"{indent}- " + _text(v, indent + "  ").lstrip() for v in data)
    return f"{indent}{_json_default(data)}"


@app.command()
def run(
    part: Annotated[
        list[str] | None,
        typer.Option(
            "--part", "-p", help="Run only these parts: workflows, bridge, http (repeatable)"
        ),
    ] = None,
) -> None:
    """Run the system: embedded servers (unless switched off) plus workers and the HTTP app."""
    from app.runner import PARTS
    from app.runner import run as run_system

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every connection
    _run(run_system)(_settings(), part or PARTS)


@app.command()
def demo(
    via: Annotated[
        str, typer.Option(help="client: Python's OrderClient on Temporal; http: the order API")
    ] = "client",
    api_key: Annotated[
        str,
        typer.Option(envvar="ORDERFLOW_API_KEY", help="The order API's key, for --via http"),
    ] = "of_local_dev_api_key",
) -> None:
    """Against a running system: a paid, an expired, an approved high-value and a retried order."""
    from app.demo import run_demo

    _run(run_demo)(via, api_key)


@orders_app.command("start")
@_run
async def orders_start(
    order_id: str,
    item: Annotated[list[str], typer.Option("--item", "-i", help="SKU:QUANTITY, repeatable")],
    customer: Annotated[str, typer.Option(help="Customer id")] = "guest",
    email: Annotated[str, typer.Option(help="Where mails go")] = "customer@example.com",
    timeout: Annotated[
        float | None, typer.Option(help="Seconds before an unpaid order is cancelled")
    ] = None,
) -> None:
    """Start an order (starting the same id again is a no-op)."""
    from orderflow.contracts.order import OrderLine

    lines = []
    for spec in item:
        sku, _, qty = spec.partition(":")
        if not qty.isdigit():
            raise OrderflowError(f"order {order_id}: item {spec!r} is not SKU:QUANTITY")
        lines.append(OrderLine(sku=sku, quantity=int(qty)))
    handle = await (await _client()).start_order(
        order_id, customer, email, lines, payment_timeout_seconds=timeout
    )
    typer.echo(f"started {handle.id}")


@orders_app.command("pay")
@_run
async def orders_pay(
    order_id: str,
    payment_id: Annotated[str, typer.Option(help="The gateway's payment id")] = "",
    amount: Annotated[
        str | None, typer.Option(help="Amount paid, e.g. 2499.00 (default: the order total)")
    ] = None,
    provider: Annotated[str, typer.Option(help="Who took the money")] = "manual",
    flagged: Annotated[bool, typer.Option(help="Force a suspicious-payment review")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Report a payment; prints whether the order accepted it."""
    from orderflow.contracts.order import PaymentReceived

    client = await _client()
    state = await client.status(order_id)
    payment = PaymentReceived(
        payment_id=payment_id or f"pay-{order_id}",
        amount=state.total if amount is None else to_minor(amount, state.currency),
        provider=provider,
        flagged=flagged,
        currency=state.currency,
    )
    ack = await client.payment_received(order_id, payment)
    _print(ack, as_json)
    if not ack.accepted:
        raise typer.Exit(2)


@orders_app.command("fail")
@_run
async def orders_fail(
    order_id: str,
    payment_id: Annotated[str, typer.Option(help="The failed payment's id")] = "",
    reason: Annotated[str, typer.Option(help="The gateway's reason")] = "declined",
) -> None:
    """Report a failed capture: the order retries it (3 attempts, an hour apart by default)."""
    from orderflow.contracts.order import PaymentFailed

    await (await _client()).payment_failed(
        order_id, PaymentFailed(payment_id=payment_id or f"failed-{order_id}", reason=reason)
    )
    typer.echo(f"order {order_id}: payment failure reported")


@orders_app.command("cancel")
@_run
async def orders_cancel(
    order_id: str, reason: Annotated[str, typer.Option()] = "cancelled by customer"
) -> None:
    """Cancel an order; a paid one is refunded."""
    await (await _client()).cancel(order_id, reason)
    typer.echo(f"order {order_id}: cancel requested")


@orders_app.command("ship")
@_run
async def orders_ship(
    order_id: str,
    carrier: Annotated[str, typer.Option()] = "",
    tracking: Annotated[str, typer.Option()] = "",
) -> None:
    """Mark a confirmed order shipped."""
    from orderflow.contracts.order import Shipment

    await (await _client()).shipped(order_id, Shipment(carrier=carrier, tracking_number=tracking))
    typer.echo(f"order {order_id}: shipment reported")


@orders_app.command("status")
@_run
async def orders_status(order_id: str, as_json: JsonOpt = False) -> None:
    """Show an order's status and history (the total shown in rupees; --json keeps minor units)."""
    state = await (await _client()).status(order_id)
    if as_json:
        _print(state, True)
        return
    typer.echo(
        f"order total: {format_money(state.total, state.currency)} (total below in minor units)"
    )
    _print(state, False)


@orders_app.command("return")
@_run
async def orders_return(
    order_id: str, reason: Annotated[str, typer.Option()] = "return requested"
) -> None:
    """Request a return: opens a manual review; approval refunds."""
    review_id = await (await _client()).request_return(order_id, reason)
    typer.echo(f"review {review_id} opened")


@reviews_app.command("list")
@_run
async def reviews_list(as_json: JsonOpt = False) -> None:
    """Pending reviews, oldest first."""
    pending = await (await _client()).pending_reviews()
    if as_json:
        _print([asdict(r) for r in pending], True)
    elif not pending:
        typer.echo("no pending reviews")
    else:
        for r in pending:
            typer.echo(
                f"{r.review_id}  order {r.order_id}  {r.kind}  {r.reason}  since {r.created_at:%Y-%m-%d %H:%M}"
            )


def _decide(review_id: str, approve: bool, by: str, note: str) -> None:
    async def go() -> None:
        outcome = await (await _client()).decide_review(
            review_id, ReviewDecision(approve=approve, reviewer=by, note=note)
        )
        typer.echo(
            f"review {outcome.review_id}: {'approved' if outcome.approved else 'rejected'} by {outcome.reviewer}"
        )

    _run(go)()


@reviews_app.command("approve")
def reviews_approve(
    review_id: str, by: Annotated[str, typer.Option(help="Reviewer")], note: str = ""
) -> None:
    """Approve a review."""
    _decide(review_id, True, by, note)


@reviews_app.command("reject")
def reviews_reject(
    review_id: str, by: Annotated[str, typer.Option(help="Reviewer")], note: str = ""
) -> None:
    """Reject a review (a paid order is refunded, released and cancelled)."""
    _decide(review_id, False, by, note)


@products_app.command("list")
def products_list(as_json: JsonOpt = False) -> None:
    """Products with stock on hand and reserved."""
    from sqlmodel import Session, select

    from orderflow.db import Product

    settings = _settings()
    with Session(_engine()) as session:
        rows = [p.model_dump() for p in session.exec(select(Product).order_by(Product.sku)).all()]
    if as_json:
        _print(rows, True)
    for p in [] if as_json else rows:
        typer.echo(
            f"{p['sku']:<14} {format_money(p['price'], settings.currency):>14}  on hand {p['on_hand']:>5}  reserved {p['reserved']:>4}  {p['name']}"
        )


@products_app.command("seed")
def products_seed() -> None:
    """Add the starter catalogue's missing products."""
    from app.catalogue import seed

    typer.echo(f"added {seed(_engine())} products")


@gateway_app.command("script")
def gateway_script(
    order_id: str,
    fail_captures: Annotated[int, typer.Option(help="Decline this many captures first")] = 0,
    decline_all: Annotated[bool, typer.Option(help="Decline every capture")] = False,
) -> None:
    """Tell the simulated gateway how to answer one order's captures."""
    from payments.gateway import SimulatedGateway

    SimulatedGateway(_engine()).set_rule(
        order_id, fail_captures=fail_captures, decline_all=decline_all
    )
    typer.echo(
        f"order {order_id}: first {fail_captures} captures declined"
        + (" (all declined)" if decline_all else "")
    )


db_app = typer.Typer(help="The database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
) -> None:
    """Apply the missing migrations: the one command that changes the schema."""
    from orderflow.schema import upgrade

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    engine = _engine()
    typer.echo(f"database at revision {', '.join(sorted(upgrade(engine, revision)))}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's revision and this code's head; exit 1 unless they match."""
    from orderflow.schema import current_revisions, head_revisions

    current = current_revisions(_engine())
    heads = head_revisions()
    typer.echo(
        f"database {', '.join(sorted(current)) or '(empty)'}; code {', '.join(sorted(heads))}"
    )
    if current != heads:
        raise typer.Exit(1)


@db_app.command("revision")
def db_revision(message: Annotated[str, typer.Argument(help="What the migration does")]) -> None:
    """Write the next migration from the models' difference to the head schema; review it."""
    from orderflow.schema import write_revision

    typer.echo(f"wrote {write_revision(message)}: review it (data steps are written by hand)")


webhooks_app = typer.Typer(
    help="Make signed gateway webhooks for local testing.", no_args_is_help=True
)
app.add_typer(webhooks_app, name="webhooks")


@webhooks_app.command("sample")
@_run
async def webhooks_sample(
    provider: Annotated[
        str, typer.Argument(help="a webhook provider: stripe, razorpay (payments.providers)")
    ],
    order_id: str,
    out: Annotated[
        str, typer.Option("--out", "-o", help="Where to write the event body")
    ] = "webhook.json",
    amount: Annotated[
        str | None, typer.Option(help="Amount, e.g. 2499.00 (default: the order total)")
    ] = None,
    failed: Annotated[
        bool, typer.Option(help="A payment-failed event instead of a capture")
    ] = False,
) -> None:
    """Write a gateway-shaped event for an order and print the signed curl command that posts it."""
    from asyncio import to_thread
    from pathlib import Path

    from payments.providers import curl_command, sample_event

    state = await (await _client()).status(order_id)
    total = state.total if amount is None else to_minor(amount, state.currency)
    body = sample_event(
        provider, order_id, total, state.currency, outcome="failed" if failed else "paid"
    )
    await to_thread(Path(out).write_bytes, body)
    typer.echo(curl_command(provider, out, _settings()))


@webhooks_app.command("sign")
def webhooks_sign(
    provider: Annotated[
        str, typer.Argument(help="a webhook provider: stripe, razorpay (payments.providers)")
    ],
    body_file: str,
    url: Annotated[str, typer.Option(help="Post somewhere else than the local HTTP app")] = "",
) -> None:
    """Print a curl command that posts BODY_FILE signed with the configured webhook secret."""
    from payments.providers import curl_command

    typer.echo(curl_command(provider, body_file, _settings(), url=url))


api_keys_app = typer.Typer(
    help="Bearer keys of the order API (/api/v1): make one, or print a key's digest.",
    no_args_is_help=True,
)
app.add_typer(api_keys_app, name="api-keys")


@api_keys_app.command("new")
def api_keys_new() -> None:
    """Make a random key: give the key to the order service, its digest to ORDERFLOW_API_KEY_HASHES."""
    import hashlib
    import secrets

    key = f"of_{secrets.token_urlsafe(32)}"
    digest = hashlib.sha256(key.encode()).hexdigest()
    typer.echo(f"key:    {key}")
    typer.echo(f"digest: {digest}")
    typer.echo(
        "Add the digest to ORDERFLOW_API_KEY_HASHES (comma-separated: keep the old key's digest"
        " there until every caller has the new key). The key is shown only now."
    )


@api_keys_app.command("hash")
def api_keys_hash(
    key: Annotated[
        str, typer.Argument(help="the key; default: read from standard input (no shell history)")
    ] = "",
) -> None:
    """Print the SHA-256 digest of a key, for ORDERFLOW_API_KEY_HASHES."""
    import hashlib

    given = (key or sys.stdin.readline()).strip()
    if not given:
        raise typer.BadParameter("no key given (as the argument or on standard input)")
    typer.echo(hashlib.sha256(given.encode()).hexdigest())


def main() -> None:
    """Console entry point: run the CLI, then exit without interpreter teardown.

    The Temporal client's runtime threads can abort CPython's finalization after a short-lived
    command (temporalio/sdk-python#300), turning a good exit into SIGABRT; nothing is left to
    flush once the command has returned, so skip the teardown.
    """
    try:
        app()
        code = 0
    except SystemExit as done:
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
        code = done.code if isinstance(done.code, int) else int(done.code is not None)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
