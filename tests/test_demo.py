"""`orderflow demo --via http`: the four scenarios (paid, expired, approved after review, capture
retried) through the HTTP order API of a served app, on the session's Temporal and workers."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app import catalogue
from app.client import OrderClient
from app.demo import run_demo
from orderflow.db import Product
from orderflow.errors import OrderflowError
from orderflow.settings import Settings
from tests.helpers import served_ops


async def test_the_demo_runs_every_scenario_through_the_order_api(
    settings: Settings,
    redis_url: str,
    orders: OrderClient,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    catalogue.seed(engine)
    with Session(engine) as session:  # enough stock however often the session ran it
        for sku in ("TSHIRT-M", "MUG-01", "LAPTOP-PRO", "HEADPHONES"):
            product = session.get(Product, sku)
            assert product is not None
            product.on_hand += 10
            session.add(product)
        session.commit()
    async with served_ops(settings, redis_url, orders, engine, "demo") as (_, local, _):
        for name, value in {
            "DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "REDIS_URL": redis_url,
            "HTTP_HOST": local.http_host,
            "HTTP_PORT": str(local.http_port),
        }.items():
            monkeypatch.setenv(f"ORDERFLOW_{name}", value)
        await run_demo(via="http")
    printed = capsys.readouterr().out
    for scenario, status in (
        ("paid", "CONFIRMED"),
        ("expired", "CANCELLED"),
        ("high-value approved", "CONFIRMED"),
        ("capture retried", "CONFIRMED"),
    ):
        [line] = [row for row in printed.splitlines() if row.startswith(scenario)]
        assert status in line and "FAILED" not in line, printed


async def test_the_demo_names_an_unknown_way_in() -> None:
    with pytest.raises(OrderflowError, match="--via 'grpc'"):
        await run_demo(via="grpc")
