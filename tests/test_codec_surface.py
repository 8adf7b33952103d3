"""Where an operator sees the codec: /ops names the keys in use, /metrics counts them, the CLI
makes keys and hashes customer ids; never a secret on any of them."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
from bullmq import Queue
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from app.cli import app as cli
from app.client import OrderClient
from app.telemetry import setup_telemetry
from app.web.app import create_app
from orderflow import codec
from orderflow.settings import Settings

OLD = codec.new_key("k-2026-01")
NEW = codec.new_key("k-2026-12")


def rotated(settings: Settings) -> Settings:
    return settings.model_copy(update={"codec_key": NEW.spec(), "codec_old_keys": OLD.spec()})


async def test_ops_names_the_codec_keys_in_use_and_never_a_secret(
    settings: Settings, redis_url: str, orders: OrderClient, engine: Engine
) -> None:
    local = rotated(settings)
    queue = Queue(f"codec-{uuid.uuid4().hex[:8]}", {"connection": redis_url})
    app = create_app(local, queue, orders=orders, engine=engine)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://shop"
        ) as http:
            ops = await http.get("/ops", auth=(local.admin_user, local.admin_password))
    finally:
        await queue.obliterate(force=True)
        await queue.close()
    assert ops.status_code == 200
    [line] = re.findall(r'<span id="codec">(.*?)</span>', ops.text)
    assert line == "customer data encrypted: key k-2026-12 (+1 old)"
    for key in (OLD, NEW):
        assert key.spec().split(":")[1] not in ops.text


def test_metrics_show_the_current_and_old_key_ids(settings: Settings) -> None:
    telemetry = setup_telemetry(rotated(settings), install_global=False)
    try:
        text = generate_latest(telemetry.registry).decode()
    finally:
        telemetry.shutdown()
    keys = {
        (s.labels["key_id"], s.labels["role"])
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "orderflow_codec_keys"
    }
    assert keys == {("k-2026-12", "current"), ("k-2026-01", "old")}
    assert NEW.spec().split(":")[1] not in text


def test_cli_makes_a_key_the_settings_accept_and_hashes_a_customer_id(settings: Settings) -> None:
    made = CliRunner().invoke(cli, ["codec", "new-key", "--id", "k-test"])
    assert made.exit_code == 0, made.output
    key = codec.parse_key(made.output.strip(), "the CLI's output")
    assert key.key_id == "k-test" and len(key.secret) == 32
    assert Settings(codec_key=made.output.strip()).codec_keyring().current == key
    hashed = CliRunner().invoke(cli, ["codec", "customer-hash", "Asha@Example.com"])
    want = codec.customer_hash("asha@example.com", Settings().customer_hash_secret)
    assert hashed.exit_code == 0 and hashed.output.strip() == want
    assert "example" not in want
    bad = CliRunner().invoke(cli, ["codec", "new-key", "--id", "no spaces"])
    assert bad.exit_code == 1 and "key id" in bad.output


def test_a_malformed_key_setting_is_refused_naming_it_and_not_echoing_it() -> None:
    import pytest
    from pydantic import ValidationError

    secret = "c2hvcnQ="  # base64 of 5 bytes
    with pytest.raises(ValidationError) as refused:
        Settings(codec_key=f"k1:{secret}")
    assert "ORDERFLOW_CODEC_KEY entry 1: key 'k1' is 5 bytes; AES-256 needs 32" in str(
        refused.value
    )
    assert secret not in str(refused.value)
    with pytest.raises(ValidationError, match="ORDERFLOW_CODEC_OLD_KEYS entry 2: a key is"):
        Settings(codec_old_keys=f"{OLD.spec()},garbage")


async def test_ops_finds_a_customers_orders_by_the_hash_it_computes_and_escapes_the_id(
    settings: Settings, redis_url: str, orders: OrderClient, engine: Engine, catalogue: Any
) -> None:
    from tests.helpers import eventually, new_order_id, pending_order

    customer = f"meera-{uuid.uuid4().hex[:6]}@example.com"
    skus = catalogue(kite=(45_000, 5))
    order_id = new_order_id()
    await pending_order(orders, [(skus["kite"], 1)], order_id=order_id, customer_id=customer)
    queue = Queue(f"codec-{uuid.uuid4().hex[:8]}", {"connection": redis_url})
    app = create_app(settings, queue, orders=orders, engine=engine)
    auth = (settings.admin_user, settings.admin_password)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://shop"
        ) as http:

            async def listed() -> str | None:
                page = await http.get("/ops/customers", params={"id": customer.upper()}, auth=auth)
                assert page.status_code == 200, page.text
                return page.text if f"order-{order_id}" in page.text else None

            text = await eventually(listed, 20, f"order {order_id} under its customer's hash")
            evil = await http.get("/ops/customers", params={"id": "<script>x</script>"}, auth=auth)
            anonymous = await http.get("/ops/customers", params={"id": customer})
    finally:
        await queue.obliterate(force=True)
        await queue.close()
    [shown] = re.findall(r'<code id="customer-hash">(.*?)</code>', text)
    assert shown == codec.customer_hash(customer, settings.customer_hash_secret)
    assert "PENDING_PAYMENT" in text and "45000" in text
    assert "CustomerId%20%3D%20%27" + shown in text  # the Web UI link runs the same search
    assert (
        evil.status_code == 200 and "<script>x" not in evil.text and "&lt;script&gt;" in evil.text
    )
    assert anonymous.status_code == 401
