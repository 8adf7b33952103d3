"""The whole Stripe loop on localstripe, as a module fixture: workers and the HTTP app wired to
the Stripe gateway (through a proxy a test can stall), the webhook queue and its processor.
Imported by the modules that use it (`from tests.stripe_system import system`)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import stripe
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from activities.erp import HttpErp
from app import embedded
from app.client import OrderClient
from app.web.app import create_app, http_server
from bridge.producer import QueueProducer
from bridge.specs import QueueSpec
from orderflow.contracts.payment import GatewayName
from orderflow.settings import Settings
from payments.stripe_gateway import StripeGateway
from tests import temporal_env
from tests.bridge_helpers import running
from tests.fake_erp import FakeErp
from tests.fake_gateways import STRIPE_TEST_KEY, LocalStripe, StallingProxy
from tests.helpers import eventually
from workers.queues import build_webhook_processor, webhook_spec
from workers.temporal import Dependencies, build_workers

GOOD_CARD = "4242424242424242"
DECLINED_CARD = (
    "4000000000000341"  # attaches to a customer, declines every charge (localstripe too)
)


@dataclass
class StripeSystem:
    """Workers, order client and HTTP app wired to the Stripe gateway at localstripe."""

    env: WorkflowEnvironment
    orders: OrderClient
    settings: Settings
    stripe: stripe.StripeClient
    localstripe: LocalStripe
    spec: QueueSpec
    proxy: StallingProxy  # between the workers and localstripe: passes all until a test arms it


@pytest.fixture(scope="module")
async def system(
    localstripe: LocalStripe,
    settings: Settings,
    engine: Engine,
    email_queue: Any,
    erp: FakeErp,
    redis_url: str,
) -> AsyncIterator[StripeSystem]:
    """The whole loop: checkout at localstripe → its signed webhook → HTTP app → queue → order."""
    proxy = StallingProxy(localstripe.url, stall=0).start()
    local = settings.model_copy(
        update={
            "gateway": GatewayName.STRIPE,
            "stripe_api_key": STRIPE_TEST_KEY,
            "stripe_api_base": proxy.url,
            "payment_retry_attempts": 4,
            "payment_retry_interval_seconds": 2.0,
            "http_host": "127.0.0.1",
            "http_port": embedded.free_port(),
            # the ghost order's events end soon
            "webhook": settings.webhook.model_copy(update={"unknown_order_window_seconds": 3.0}),
        }
    )
    async with await temporal_env.start_local() as env:
        deps = dataclasses.replace(
            Dependencies.from_settings(local, engine, email_queue), erp=HttpErp(erp.url)
        )
        assert isinstance(deps.gateway, StripeGateway)
        workers = build_workers(env.client, local, deps)
        tasks = [asyncio.create_task(w.run()) for w in workers]
        orders = OrderClient(env.client, local, engine)
        tag = uuid.uuid4().hex[:8]
        spec = webhook_spec(local).with_(prefix=f"t{tag}", name=f"stripe-webhook-{tag}")
        producer = QueueProducer.connect(spec, redis_url)
        server = http_server(local, create_app(local, producer, orders=orders, engine=engine))
        serving = asyncio.create_task(server.serve())

        async def listening() -> bool:
            return bool(getattr(server, "started", False))

        await eventually(listening, what="the HTTP app listening")
        localstripe.register_webhook(
            "orderflow-tests",
            f"http://127.0.0.1:{local.http_port}/webhooks/stripe",
            local.stripe_webhook_secret,
        )
        client = stripe.StripeClient(
            STRIPE_TEST_KEY, base_addresses={"api": localstripe.url}, max_network_retries=0
        )
        processor = build_webhook_processor(local, orders, engine)
        async with running(spec, processor, redis_url):
            yield StripeSystem(env, orders, local, client, localstripe, spec, proxy)
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
        await producer.close()
        await asyncio.gather(*(w.shutdown() for w in workers))
        await asyncio.gather(*tasks, return_exceptions=True)
    proxy.stop()


def card(system: StripeSystem, number: str, customer: str = "") -> str:
    """A card PaymentMethod (attached to `customer` if given)."""
    method = system.stripe.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": number, "exp_month": 12, "exp_year": 2031, "cvc": "123"},
        }
    )
    if customer:
        system.stripe.v1.payment_methods.attach(method.id, params={"customer": customer})
    return method.id


def make_default(system: StripeSystem, customer: str, method: str) -> None:
    """The customer's saved card for off-session charges."""
    system.stripe.v1.customers.update(
        customer, params={"invoice_settings": {"default_payment_method": method}}
    )
