"""Webhook providers as plug-ins (issue 19): a third provider declared in one module
(tests/examplepay.py) and registered gets its route, signature check, processing and metrics;
every registered provider is complete."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace

import httpx
import pytest
from bullmq import Queue
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from app.client import OrderClient
from app.telemetry import Telemetry
from app.web.app import create_app
from bridge.job import Job
from orderflow.contracts.payment import (
    GATEWAY_SETTINGS,
    GatewayMode,
    GatewayName,
    GatewayRequest,
    PaymentKind,
)
from orderflow.settings import GUARDED_SECRETS, Settings
from payments import providers
from payments.events import EventKind
from payments.gateway import without_keys
from payments.processor import WebhookProcessor
from payments.providers import sample_event, signed_headers
from payments.signatures import SignatureError
from tests.examplepay import EXAMPLEPAY
from tests.helpers import pending_order, wait_status

Catalogue = Callable[..., dict[str, str]]


@pytest.fixture
def examplepay() -> Iterator[providers.WebhookProvider]:
    """ExamplePay in the registry for one test: its module, and this one line."""
    providers.register(EXAMPLEPAY)
    yield EXAMPLEPAY
    providers.unregister(EXAMPLEPAY.name)


@pytest.fixture
async def queue(redis_url: str) -> AsyncIterator[Queue]:
    q = Queue(f"providers-{uuid.uuid4().hex[:8]}", {"connection": redis_url})
    yield q
    await q.obliterate(force=True)
    await q.close()


def webhooks_answered(text: str, provider: str, outcome: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "orderflow_webhooks_total"
        and s.labels.get("provider") == provider
        and s.labels.get("outcome") == outcome
    )


async def test_a_third_provider_in_one_module_gets_route_check_processing_metrics_and_ops(
    examplepay: providers.WebhookProvider,
    settings: Settings,
    queue: Queue,
    orders: OrderClient,
    engine: Engine,
    catalogue: Catalogue,
    telemetry: Telemetry,
) -> None:
    skus = catalogue(kite=(45_000, 5))
    order = await pending_order(orders, [(skus["kite"], 1)])
    fresh = settings.model_copy(update={"metrics_cache_seconds": 0})
    app = create_app(fresh, queue, orders=orders, engine=engine, telemetry=telemetry)
    body = sample_event("examplepay", order.id, 45_000)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        before = (await http.get("/metrics")).text
        forged = await http.post(
            "/webhooks/examplepay", content=body, headers={"X-Examplepay-Signature": "00"}
        )
        accepted = await http.post(
            "/webhooks/examplepay", content=body, headers=signed_headers("examplepay", body, fresh)
        )
        metrics = (await http.get("/metrics")).text
    assert forged.status_code == 400 and forged.json()["error"] == "invalid_signature"
    assert accepted.status_code == 200, accepted.text
    job_id = accepted.json()["job_id"]
    assert job_id == f"examplepay-ex_evt_payment.done_{order.id}"
    for outcome in ("accepted", "rejected"):  # the session's counters: what this test added
        added = webhooks_answered(metrics, "examplepay", outcome)
        assert added - webhooks_answered(before, "examplepay", outcome) == 1, outcome

    queued = await queue.getJob(job_id)
    assert queued is not None and queued.name == "examplepay-webhook"
    job = Job(id=job_id, name=queued.name, data=queued.data, opts={}, attempts_made=0,
              timestamp=int(time.time() * 1000), token="t", queue=queue.name)  # fmt: skip
    outcome = await WebhookProcessor(orders, engine)(job)
    assert outcome["status"] == "applied", outcome
    state = await wait_status(orders, order.id, "CONFIRMED")
    assert state.payment_id == f"ex_pay_{order.id}"

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        ops = await http.get("/ops", auth=(fresh.admin_user, fresh.admin_password))
    assert ops.status_code == 200
    rows = re.findall(r"<tr data-provider=\"examplepay\">.*?</tr>", ops.text, re.S)
    assert len(rows) == 1, ops.text[ops.text.find("providers") :][:1500]
    [row] = rows
    assert "ExamplePay" in row and "<code>POST /webhooks/examplepay</code>" in row
    assert "<code>X-Examplepay-Signature</code>" in row
    assert re.search(r'data-status="APPLIED">APPLIED: [1-9]', row), row


async def test_an_unregistered_provider_has_no_route_and_its_jobs_are_refused(
    settings: Settings, queue: Queue, orders: OrderClient, engine: Engine
) -> None:
    app = create_app(settings, queue)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        missing = await http.post("/webhooks/examplepay", content=b"{}")
    assert missing.status_code in (404, 405)
    job = Job(id="examplepay-x", name="examplepay-webhook", data={}, opts={}, attempts_made=0,
              timestamp=int(time.time() * 1000), token="t", queue=queue.name)  # fmt: skip
    with pytest.raises(Exception, match="unknown job name"):
        await WebhookProcessor(orders, engine)(job)
    with pytest.raises(providers.UnknownProviderError, match="expected one of"):
        signed_headers("examplepay", b"{}", settings)


@pytest.mark.parametrize("name", [*providers.names(), EXAMPLEPAY.name])
def test_every_registered_provider_is_complete(
    name: str, settings: Settings, request: pytest.FixtureRequest
) -> None:
    """Signs what it verifies, refuses a forged signature, reads its own samples as their kind,
    and names where its order id lives (the built-in ones, and the plug-in of the tests)."""
    if name == EXAMPLEPAY.name:
        request.getfixturevalue("examplepay")
    provider = providers.get(name)
    assert provider.job_name == f"{name}-webhook" and provider.order_id_field
    assert set(provider.samples) >= {"paid", "failed"}, f"{name}: samples"
    expected = {"paid": EventKind.PAYMENT_RECEIVED, "failed": EventKind.PAYMENT_FAILED}
    for outcome, make in provider.samples.items():
        body = make("o-complete", 12_300)
        headers = provider.sign(body, settings, None, f"evt_{outcome}")
        provider.verify(body, headers, settings)
        with pytest.raises(SignatureError):
            provider.verify(body + b" ", headers, settings)
        event = providers.parse_event(name, body, headers)
        assert (event.provider, event.kind, event.order_id) == (
            name,
            expected[outcome],
            "o-complete",
        ), f"{name} {outcome}"
        assert event.type in provider.kinds


@pytest.mark.parametrize("name", [g for g in GatewayName if g is not GatewayName.SIMULATED])
def test_every_real_gateway_has_its_settings_row_and_a_provider_that_builds_it(
    name: GatewayName,
) -> None:
    """Its row in GATEWAY_SETTINGS names Settings fields; its provider points at that row,
    builds its gateway from test-mode keys and redacts every kind of its keys."""
    spec = GATEWAY_SETTINGS[name]
    provider = providers.get(name.value)
    assert spec.name is name and provider.settings is spec and provider.gateway
    named = {*spec.keys, spec.mode_key, spec.webhook_secret, *spec.key_kinds}
    assert named <= set(Settings.model_fields) and spec.mode_key in spec.keys, name
    assert spec.webhook_secret in GUARDED_SECRETS
    assert spec.live_prefixes and spec.test_prefixes and provider.key_patterns
    for prefix in (*spec.live_prefixes, *spec.test_prefixes):
        assert without_keys(f"bad key {prefix}Zz9 here") == "bad key [key] here", prefix
    keys = {key: f"{spec.test_prefixes[0]}51Pq8xYz" for key in spec.keys}
    configured = Settings(gateway=name, **keys)
    configured.check_gateway()
    assert configured.gateway_mode is GatewayMode.TEST
    live = configured.model_copy(update={spec.mode_key: f"{spec.live_prefixes[0]}51Pq8xYz"})
    assert live.gateway_mode is GatewayMode.LIVE
    assert providers.build_gateway(name.value, configured).name == name.value


def test_the_gateway_names_the_settings_and_the_providers_agree() -> None:
    """Every real GatewayName has a settings row and a provider with a gateway, and nothing
    else has either: no name falls through to another gateway."""
    real = {g for g in GatewayName if g is not GatewayName.SIMULATED}
    assert set(GATEWAY_SETTINGS) == real
    assert {p.name for p in providers.all_providers() if p.gateway} == {g.value for g in real}
    assert {p.name for p in providers.all_providers() if p.settings} == {g.value for g in real}


def test_a_third_providers_gateway_and_keys_come_from_its_module(
    examplepay: providers.WebhookProvider, settings: Settings
) -> None:
    gateway = providers.build_gateway("examplepay", settings)
    request = GatewayRequest("o-ex", PaymentKind.CAPTURE, 500, 1, "o-ex-capture-1")
    assert gateway.name == "examplepay" and gateway.capture(request).succeeded
    assert without_keys("refused exp_live_4f2a9") == "refused [key]"
    providers.unregister("examplepay")
    assert without_keys("refused exp_live_4f2a9") == "refused exp_live_4f2a9"
    with pytest.raises(providers.UnknownProviderError):
        providers.build_gateway("examplepay", settings)
    hooks_only = providers.register(replace(EXAMPLEPAY, name="examplehooks", gateway=None))
    try:
        with pytest.raises(providers.NoGatewayError, match="declares no gateway"):
            providers.build_gateway(hooks_only.name, settings)
    finally:
        providers.unregister(hooks_only.name)
