"""A webhook event's job data: every field, as `asdict` gives it, and read back the same."""

from __future__ import annotations

from dataclasses import asdict, fields

from payments.events import GatewayEvent


def test_an_event_becomes_job_data_with_every_field_and_reads_back_the_same() -> None:
    event = GatewayEvent(
        provider="stripe", event_id="evt_1", type="charge.refunded", kind="refund",
        order_id="o-1", payment_id="pi_1", amount_minor=900, currency="INR",
        refunds_listed=[{"id": "re_1", "amount": 900, "status": "succeeded"}],
        refunded_total=900, refund_cumulative=True, flagged=True,
    )  # fmt: skip
    data = event.to_job()
    assert data == asdict(event) and set(data) == {f.name for f in fields(GatewayEvent)}
    data["refunds_listed"][0]["amount"] = 1  # the job's copy, not the event's list
    assert event.refunds_listed[0]["amount"] == 900
    assert GatewayEvent.from_job(event.to_job()) == event
