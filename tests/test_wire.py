"""The wire types' JSON Schemas (orderflow/contracts/wire.py): committed as the code says, and
true of what Temporal's default converter actually writes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from temporalio import converter

from orderflow.contracts.mail import EmailJob, EmailJobData
from orderflow.contracts.order import (
    CancelRequest,
    OrderInput,
    OrderLine,
    OrderPolicy,
    OrderResult,
    OrderState,
    OrderStatus,
    PaymentAck,
    PaymentFailed,
    PaymentReceived,
    Shipment,
    StatusChange,
)
from orderflow.contracts.review import PendingReview, ReviewDecision, ReviewKind, ReviewOutcome
from orderflow.contracts.wire import SCHEMA_SUFFIX, WIRE_TYPES, schema_files
from workflows.order import OrderWorkflow

SCHEMAS = Path(__file__).parents[1] / "contracts" / "schemas"
AT = datetime(2026, 3, 1, 9, 30, 15, 250_000, tzinfo=UTC)

# one value of every wire type, with its enums, datetimes, lists and None filled in
SAMPLES: dict[str, Any] = {
    "OrderInput": OrderInput(
        order_id="o-1",
        customer_id="c-1",
        email="meera@example.com",
        items=[OrderLine(sku="KITE-1", quantity=2)],
        policy=OrderPolicy(payment_timeout_seconds=90.5, high_value_threshold=10),
    ),
    "OrderResult": OrderResult(
        order_id="o-1", status=OrderStatus.CANCELLED, total=90_000, currency="INR"
    ),
    "PaymentReceived": PaymentReceived(
        payment_id="pi_1", amount=90_000, provider="stripe", flagged=True, currency="INR"
    ),
    "PaymentFailed": PaymentFailed(payment_id="pi_1", reason="card_declined", attempt_id="ch_1"),
    "PaymentAck": PaymentAck(accepted=False, status=None, reason="order o-1 is closed"),
    "CancelRequest": CancelRequest(reason="changed mind"),
    "Shipment": Shipment(carrier="BlueDart", tracking_number="BD123"),
    "OrderState": OrderState(
        order_id="o-1",
        status=OrderStatus.CONFIRMED,
        total=90_000,
        currency="INR",
        history=[StatusChange(OrderStatus.NEW, AT), StatusChange(OrderStatus.CONFIRMED, AT, "ok")],
        payment_id="pi_1",
    ),
    "ReviewDecision": ReviewDecision(approve=True, reviewer="asha", note="known customer"),
    "ReviewOutcome": ReviewOutcome(
        review_id="review-order-o-1", order_id="o-1", approved=True, reviewer="asha", note=""
    ),
    "PendingReview": PendingReview(
        review_id="review-order-o-1",
        order_id="o-1",
        kind=ReviewKind.HIGH_VALUE,
        reason="above ₹50,000",
        created_at=AT,
    ),
    "EmailJobData": EmailJobData(
        to="meera@example.com",
        subject="Order Confirmed — o-1",
        template=EmailJob.ORDER_CONFIRMATION,
        data={"orderNumber": "o-1", "items": [], "total": "900.00", "totalMinor": 90_000},
    ),
}


def committed(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / f"{name}{SCHEMA_SUFFIX}").read_text())
    return schema


def on_the_wire(value: Any) -> Any:
    """The JSON Temporal's default data converter writes for a value, read back as JSON."""
    [payload] = converter.default().payload_converter.to_payloads([value])
    assert payload.metadata["encoding"] == b"json/plain"
    return json.loads(payload.data)


def test_the_committed_schemas_are_the_codes() -> None:
    expected = schema_files()
    present = {path.name for path in SCHEMAS.glob(f"*{SCHEMA_SUFFIX}")}
    stale = sorted(present - set(expected))
    assert not stale, f"contracts/schemas/{stale[0]} names no wire type: run `make schemas`"
    for file_name, text in expected.items():
        path = SCHEMAS / file_name
        assert path.exists(), f"contracts/schemas/{file_name} is missing: run `make schemas`"
        assert path.read_text(encoding="utf-8") == text, (
            f"contracts/schemas/{file_name} differs from the code: run `make schemas` and commit it"
        )


def test_every_wire_type_has_a_sample() -> None:
    assert set(SAMPLES) == set(WIRE_TYPES)
    assert all(isinstance(SAMPLES[name], cls) for name, cls in WIRE_TYPES.items())


def test_the_order_workflows_handlers_take_and_give_wire_types() -> None:
    """A handler's argument or answer that changes type must get its schema too."""
    hints = [
        OrderWorkflow.run.__annotations__["order"],
        OrderWorkflow.run.__annotations__["return"],
        OrderWorkflow.pay.__annotations__["payment"],
        OrderWorkflow.pay.__annotations__["return"],
        OrderWorkflow.payment_failed.__annotations__["failure"],
        OrderWorkflow.cancel.__annotations__["request"],
        OrderWorkflow.shipped.__annotations__["shipment"],
        OrderWorkflow.status.__annotations__["return"],
    ]
    assert {str(hint) for hint in hints} <= set(WIRE_TYPES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_what_temporal_writes_is_valid_and_reads_back(name: str) -> None:
    wire = on_the_wire(SAMPLES[name])
    validator = jsonschema.Draft202012Validator(
        committed(name), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    validator.validate(wire)
    [payload] = converter.default().payload_converter.to_payloads([SAMPLES[name]])
    [back] = converter.default().payload_converter.from_payloads([payload], [WIRE_TYPES[name]])
    assert back == SAMPLES[name]


def test_the_schemas_refuse_what_the_workflow_would_misread() -> None:
    validator = jsonschema.Draft202012Validator(committed("PaymentReceived"))
    good = on_the_wire(SAMPLES["PaymentReceived"])
    assert not list(validator.iter_errors({"payment_id": "pi_1", "amount": 90_000}))
    for bad, where in (
        ({**good, "amount": "900.00"}, "amount"),  # money is integer minor units
        ({**good, "amount": 900.5}, "amount"),
        ({**good, "paymentId": "pi_1"}, "paymentId"),  # the converter would drop it silently
        ({"amount": 90_000}, "payment_id"),
    ):
        assert any(where in str(error) for error in validator.iter_errors(bad)), bad
    state = jsonschema.Draft202012Validator(committed("OrderState"))
    assert list(state.iter_errors({**on_the_wire(SAMPLES["OrderState"]), "status": "LOST"}))
