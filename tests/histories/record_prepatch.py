"""Record the golden histories of the branch before each patch: the orders of a release that did
not have it yet, which replay through its old branch for as long as the patch is in the code.

Run by hand, like record.py (every recording is encrypted, so name it `codec.`):

    ORDERFLOW_RECORD_RELEASE=codec .venv/bin/pytest -q -p no:cacheprovider \\
        tests/histories/record_prepatch.py -k sqlite

How: each test runs the real stack of tests/conftest.py with `workflow.patched` answering
False for its patch id (recording.before_patches, a monkeypatch of `temporalio.workflow.patched`
for the test's duration), so the history records no marker for it and the workflow takes the
branch it took before the patch. For OrderWorkflow the start marker `patches-decided-at-start`
is off too: it answers every folded id at once, so an order with it never asks them (orders
from before it asked each id where the code is, and so do these). Every other patch is on: the
order is one of the last release without that patch. Each path is the one its patch changed
(docs/VERSIONING.md lists them); the gateway is scripted where the path needs it (a capture held
at the gateway, a release that does not let go, a hold the gateway captured, a capture that
errors), and two paths need two events in one workflow task (recording.OwnOrdersQueue).

tests/test_replay.py checks that every patch id the code asks has a golden where `patched`
answers False on replay, and fails naming the id and the line that asks it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest
from temporalio.testing import WorkflowEnvironment

from app.client import OrderClient
from orderflow.contracts.order import PaymentFailed, PaymentReceived, Shipment
from orderflow.contracts.payment import (
    GatewayRequest,
    GatewayResponse,
    HoldState,
    HoldStatus,
    PaymentKind,
    payment_retry_workflow_id,
)
from orderflow.contracts.review import ReviewDecision
from orderflow.settings import Settings
from payments.gateway import GatewayConfigError
from tests.helpers import eventually, pending_order, started_workflow, wait_review, wait_status
from tests.histories.recording import (
    CaptureGate,
    OwnOrdersQueue,
    before_patches,
    pay_and_ship,
    save,
    signal_handled,
    timer_fired,
)
from workers.temporal import Dependencies
from workflows.order_patches import (
    HOLD_LOOKED_UP,
    MANUAL_CAPTURE,
    PAID_AS_RETRY_ENDED,
    PAID_AS_TIMER_FIRED,
    PATCHES_AT_START,
    REFUSED_HOLD_REFUND_APART,
    RETRY_CAPTURE_IS_NOT_ITS_OWN_DUPLICATE,
    RETRY_CAPTURED_THE_HOLD,
    RETRY_FINISHES_CAPTURE,
    REVIEW_ENDS_ON_CANCEL,
    WHOLE_HOLD_ONLY,
)
from workflows.payment import UNKNOWN_CAPTURE_ASKED_AGAIN

Catalogue = Callable[..., dict[str, str]]
PRICE = 120_000  # ₹1,200: below the review threshold
HIGH = 6_500_000  # ₹65,000: reviewed


def before(monkeypatch: pytest.MonkeyPatch, patch_id: str) -> str:
    """An order of the release before `patch_id` (and before the start marker); its path name."""
    before_patches(monkeypatch, PATCHES_AT_START, patch_id)
    return f"before-{patch_id}"


def retry_id(order_id: str, kind: PaymentKind = PaymentKind.CAPTURE) -> str:
    return payment_retry_workflow_id(order_id, kind)


async def ship(orders: OrderClient, order_id: str) -> None:
    await wait_status(orders, order_id, "CONFIRMED")
    await orders.shipped(order_id, Shipment(carrier="BlueDart", tracking_number="BD9"))


async def test_retry_finishes_capture(
    monkeypatch: pytest.MonkeyPatch,
    env: WorkflowEnvironment,
    orders: OrderClient,
    deps: Dependencies,
    catalogue: Catalogue,
) -> None:
    """A payment accepted while the capture retry waits for its next attempt: the order
    cancels the retry (the fix lets it finish and hears how it ended)."""
    path = before(monkeypatch, RETRY_FINISHES_CAPTURE)
    order = await pending_order(orders, [(catalogue(kettle=(PRICE, 5))["kettle"], 1)])
    deps.gateway.set_rule(order.id, fail_captures=1)  # type: ignore[attr-defined]
    await orders.payment_failed(order.id, PaymentFailed(payment_id="pf-1", reason="declined"))
    retry = await started_workflow(env.client, retry_id(order.id))

    async def declined_once() -> bool:
        return len(await retry.query("attempts")) == 1

    await eventually(declined_once, 20, "the retry's first attempt declined")
    await pay_and_ship(orders, order.id, PRICE)
    assert (await order.handle.result()).status == "SHIPPED"
    await save(orders.client, path, order.handle.id, retry.id)


async def test_review_ends_on_cancel(
    monkeypatch: pytest.MonkeyPatch, orders: OrderClient, catalogue: Catalogue
) -> None:
    """An order cancelled in review waits for the reviewer (the fix withdraws the review)."""
    path = before(monkeypatch, REVIEW_ENDS_ON_CANCEL)
    order = await pending_order(orders, [(catalogue(tv=(HIGH, 2))["tv"], 1)])
    paid = PaymentReceived(f"pay-{order.id}", HIGH, currency="INR")
    assert (await orders.payment_received(order.id, paid)).accepted
    review = await wait_review(orders, order.id)
    await orders.cancel(order.id, "customer cancelled in review")
    await eventually(lambda: signal_handled(order.handle, "cancel"), 20, "the cancel heard")
    await orders.decide_review(review.review_id, ReviewDecision(approve=False, reviewer="asha"))
    assert (await order.handle.result()).status == "CANCELLED"
    await save(
        orders.client,
        path,
        order.handle.id,
        review.review_id,
        retry_id(order.id, PaymentKind.REFUND),
        f"inventory-release-{order.id}",
    )


async def test_retry_capture_is_not_its_own_duplicate(
    monkeypatch: pytest.MonkeyPatch,
    env: WorkflowEnvironment,
    orders: OrderClient,
    deps: Dependencies,
    catalogue: Catalogue,
) -> None:
    """The gateway's webhook of the retry's own capture comes first: the order refunds that
    capture as a duplicate of itself (the fix keeps it as the order's payment)."""
    path = before(monkeypatch, RETRY_CAPTURE_IS_NOT_ITS_OWN_DUPLICATE)
    gate = CaptureGate(monkeypatch, deps)
    order = await pending_order(orders, [(catalogue(kettle=(PRICE, 5))["kettle"], 1)])
    await orders.payment_failed(order.id, PaymentFailed(payment_id="pf-2", reason="declined"))
    request = await gate.held()
    own = PaymentReceived(f"sim_{request.idempotency_key}", PRICE, currency="INR")
    assert (await orders.payment_received(order.id, own)).accepted
    gate.open()
    await ship(orders, order.id)
    assert (await order.handle.result()).status == "SHIPPED"
    await save(orders.client, path, order.handle.id, retry_id(order.id))
    # the refund of the duplicate is a PaymentRetryWorkflow too: a file of its own name
    await save(orders.client, f"{path}-refund", retry_id(order.id, PaymentKind.REFUND))


async def test_manual_capture(
    monkeypatch: pytest.MonkeyPatch, orders: OrderClient, catalogue: Catalogue
) -> None:
    """An authorisation (no order before the patch had one) confirms the order uncaptured."""
    path = before(monkeypatch, MANUAL_CAPTURE)
    order = await pending_order(orders, [(catalogue(lamp=(PRICE, 5))["lamp"], 1)])
    held = PaymentReceived(f"pi_held_{order.id}", PRICE, authorised_only=True, currency="INR")
    assert (await orders.payment_received(order.id, held)).accepted
    await ship(orders, order.id)
    assert (await order.handle.result()).status == "SHIPPED"
    await save(orders.client, path, order.handle.id)


async def test_retry_captured_the_hold(
    monkeypatch: pytest.MonkeyPatch,
    orders: OrderClient,
    deps: Dependencies,
    catalogue: Catalogue,
) -> None:
    """The hold of the very payment the retry is capturing arrives meanwhile: the order keeps
    it as a hold and captures it a second time (the fix takes the retry's capture as it)."""
    path = before(monkeypatch, RETRY_CAPTURED_THE_HOLD)
    gate = CaptureGate(monkeypatch, deps)
    order = await pending_order(orders, [(catalogue(lamp=(PRICE, 5))["lamp"], 1)])
    await orders.payment_failed(order.id, PaymentFailed(payment_id="pf-3", reason="declined"))
    request = await gate.held()
    held = PaymentReceived(
        f"sim_{request.idempotency_key}", PRICE, authorised_only=True, currency="INR"
    )
    assert (await orders.payment_received(order.id, held)).accepted
    gate.open()
    await ship(orders, order.id)
    assert (await order.handle.result()).status == "SHIPPED"
    assert len(gate.requests) == 2, [r.idempotency_key for r in gate.requests]  # the old way
    await save(orders.client, path, order.handle.id, retry_id(order.id))


def script_holds(
    monkeypatch: pytest.MonkeyPatch, deps: Dependencies, *, captured: bool
) -> list[str]:
    """Every release at the session's gateway answers "not released"; with `captured`, the
    lookup answers that the gateway captured the whole hold. Returns the holds asked about."""
    asked: list[str] = []

    def release(request: GatewayRequest) -> GatewayResponse:
        asked.append(request.payment_id)
        return GatewayResponse(succeeded=False, detail=f"{request.payment_id} is captured")

    def hold_status(request: GatewayRequest) -> HoldStatus:
        asked.append(request.payment_id)
        state = HoldState.CAPTURED if captured else HoldState.HELD
        return HoldStatus(request.payment_id, state, request.amount, 0, request.currency)

    monkeypatch.setattr(deps.gateway, "release", release)
    monkeypatch.setattr(deps.gateway, "hold_status", hold_status)
    return asked


async def test_refused_hold_refund_apart(
    monkeypatch: pytest.MonkeyPatch,
    orders: OrderClient,
    deps: Dependencies,
    catalogue: Catalogue,
) -> None:
    """A refused hold the gateway had captured is refunded under the order's own refund id (the
    fix gives it an id of its own); the order is then paid in full and ships."""
    path = before(monkeypatch, REFUSED_HOLD_REFUND_APART)
    asked = script_holds(monkeypatch, deps, captured=True)
    order = await pending_order(orders, [(catalogue(lamp=(PRICE, 5))["lamp"], 1)])
    short = PaymentReceived(f"pi_short_{order.id}", 100, authorised_only=True, currency="INR")
    ack = await orders.payment_received(order.id, short)
    assert not ack.accepted and "refunded" in ack.reason, ack.reason
    assert asked == [short.payment_id, short.payment_id]  # released, then looked up
    await pay_and_ship(orders, order.id, PRICE)
    assert (await order.handle.result()).status == "SHIPPED"
    await save(orders.client, path, order.handle.id, retry_id(order.id, PaymentKind.REFUND))


async def test_hold_looked_up(
    monkeypatch: pytest.MonkeyPatch,
    orders: OrderClient,
    deps: Dependencies,
    catalogue: Catalogue,
) -> None:
    """A hold not released when the order is cancelled in review is refunded for a guessed
    amount (the fix looks it up at the gateway first)."""
    path = before(monkeypatch, HOLD_LOOKED_UP)
    asked = script_holds(monkeypatch, deps, captured=True)
    order = await pending_order(orders, [(catalogue(tv=(HIGH, 2))["tv"], 1)])
    held = PaymentReceived(f"pi_held_{order.id}", HIGH, authorised_only=True, currency="INR")
    assert (await orders.payment_received(order.id, held)).accepted
    review = await wait_review(orders, order.id)
    await orders.cancel(order.id, "customer cancelled before capture")
    assert (await order.handle.result()).status == "CANCELLED"
    assert asked == [held.payment_id]  # released only: never looked up
    await save(
        orders.client,
        path,
        order.handle.id,
        review.review_id,
        retry_id(order.id, PaymentKind.REFUND),
        f"inventory-release-{order.id}",
    )


async def test_whole_hold_only(
    monkeypatch: pytest.MonkeyPatch, orders: OrderClient, catalogue: Catalogue
) -> None:
    """A Razorpay hold above the total is accepted and the total captured from it (the fix
    refuses it: Razorpay captures only a whole hold)."""
    path = before(monkeypatch, WHOLE_HOLD_ONLY)
    order = await pending_order(orders, [(catalogue(lamp=(PRICE, 5))["lamp"], 1)])
    held = PaymentReceived(
        f"pay_{order.id}", PRICE + 10_000, "razorpay", authorised_only=True, currency="INR"
    )
    assert (await orders.payment_received(order.id, held)).accepted
    await ship(orders, order.id)
    assert (await order.handle.result()).status == "SHIPPED"
    await save(orders.client, path, order.handle.id, retry_id(order.id))


async def test_unknown_capture_asked_again(
    monkeypatch: pytest.MonkeyPatch,
    env: WorkflowEnvironment,
    orders: OrderClient,
    deps: Dependencies,
    catalogue: Catalogue,
) -> None:
    """Every capture of the retry ends in a gateway error: the retry ends unsucceeded at once
    and the order is cancelled (the fix asks the last one again under its key first)."""
    before_patches(monkeypatch, UNKNOWN_CAPTURE_ASKED_AGAIN)  # PaymentRetryWorkflow's own
    path = f"before-{UNKNOWN_CAPTURE_ASKED_AGAIN}"

    def capture(request: GatewayRequest) -> GatewayResponse:
        raise GatewayConfigError("simulated", request.order_id, "scripted gateway error")

    monkeypatch.setattr(deps.gateway, "capture", capture)
    order = await pending_order(orders, [(catalogue(kettle=(PRICE, 5))["kettle"], 1)])
    await orders.payment_failed(order.id, PaymentFailed(payment_id="pf-4", reason="declined"))
    retry = await started_workflow(env.client, retry_id(order.id))
    await env.fast_forward(retry)
    assert not (await retry.result())["succeeded"]
    assert (await order.handle.result()).status == "CANCELLED"
    await save(orders.client, path, order.handle.id, retry.id, f"inventory-release-{order.id}")


async def test_paid_as_retry_ended(
    monkeypatch: pytest.MonkeyPatch,
    env: WorkflowEnvironment,
    settings: Settings,
    orders: OrderClient,
    deps: Dependencies,
    catalogue: Catalogue,
) -> None:
    """The retry's capture succeeds and a card payment is accepted in the same workflow task:
    the order keeps both and is paid by the retry's (the fix refunds the retry's)."""
    path = before(monkeypatch, PAID_AS_RETRY_ENDED)
    gate = CaptureGate(monkeypatch, deps)
    own = OwnOrdersQueue(env.client, settings, deps)
    sku = catalogue(kettle=(PRICE, 5))["kettle"]
    async with own.worker():
        order = await pending_order(own.orders, [(sku, 1)])
        await own.orders.payment_failed(order.id, PaymentFailed("pf-5", "declined"))
        await gate.held()
    # nobody serves the order now: the payment and the retry's end wait in its history
    card = PaymentReceived(f"pay-{order.id}", PRICE, currency="INR")
    await own.orders.signal_payment_received(order.id, card)
    retry = await started_workflow(env.client, retry_id(order.id))
    gate.open()
    assert (await retry.result())["succeeded"]
    async with own.worker():
        await ship(own.orders, order.id)
        assert (await order.handle.result()).status == "SHIPPED"
    await save(orders.client, path, order.handle.id, retry.id)


async def test_paid_as_timer_fired(
    monkeypatch: pytest.MonkeyPatch,
    env: WorkflowEnvironment,
    settings: Settings,
    orders: OrderClient,
    deps: Dependencies,
    catalogue: Catalogue,
) -> None:
    """The hour ends and a payment is accepted in the same workflow task: the order is
    cancelled as unpaid and the payment refunded (the fix takes the payment)."""
    path = before(monkeypatch, PAID_AS_TIMER_FIRED)
    own = OwnOrdersQueue(env.client, settings, deps)
    sku = catalogue(mug=(PRICE, 5))["mug"]
    async with own.worker():
        order = await pending_order(own.orders, [(sku, 1)])
    # time skips only while no workflow task is pending: the hour first, then the payment
    skip = asyncio.create_task(env.fast_forward(order.handle, timedelta(minutes=61)))
    try:
        await eventually(lambda: timer_fired(order.handle), 20, "the auto-cancel timer fired")
        late = PaymentReceived(f"pay-{order.id}", PRICE, currency="INR")
        await own.orders.signal_payment_received(order.id, late)
        async with own.worker():
            assert (await order.handle.result()).status == "CANCELLED"
    finally:
        skip.cancel()
    await save(
        orders.client,
        path,
        order.handle.id,
        retry_id(order.id, PaymentKind.REFUND),
        f"inventory-release-{order.id}",
    )
