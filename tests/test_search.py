"""Temporal UI search: the order search attributes stay current, and the README's queries work."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from temporalio.client import Client

from app.client import OrderClient
from orderflow.codec import customer_hash
from orderflow.contracts.order import (
    CUSTOMER_ID,
    ORDER_STATUS,
    ORDER_TOTAL,
    PaymentReceived,
    order_workflow_id,
)
from tests.helpers import eventually, new_order_id, pending_order, wait_review, wait_status

README = Path(__file__).resolve().parent.parent / "README.md"
CANCELLED_TODAY = (
    "WorkflowType = 'OrderWorkflow' AND OrderStatus = 'CANCELLED' AND CloseTime >= '{today}'"
)
HIGH_VALUE_IN_REVIEW = (
    "WorkflowType = 'OrderWorkflow' AND OrderStatus = 'IN_REVIEW' AND OrderTotal > 50000"
)
Catalogue = Callable[..., dict[str, str]]


async def ids(client: Client, query: str, expect: set[str], within: float = 10.0) -> set[str]:
    """Workflow ids the query finds, waiting out visibility's lag until `expect` shows up."""

    async def found() -> set[str] | None:
        seen = {wf.id async for wf in client.list_workflows(query)}
        return seen if expect <= seen else None

    return await eventually(found, within, f"{sorted(expect)} found by {query!r}")


async def test_search_attributes_follow_the_order_and_the_readme_queries_find_it(
    orders: OrderClient, catalogue: Catalogue
) -> None:
    skus = catalogue(tv=(6_000_000, 3), mug=(30_000, 10))
    big, small = new_order_id(), new_order_id()
    await pending_order(orders, [(skus["tv"], 1)], order_id=big, customer_id="cust-big")
    await pending_order(orders, [(skus["mug"], 2)], order_id=small, customer_id="cust-small")
    await orders.payment_received(
        big,
        PaymentReceived(
            payment_id=f"pay-{big}", amount=6_000_000, provider="stripe", currency="INR"
        ),
    )
    await wait_review(orders, big)
    await orders.cancel(small, "changed my mind")
    await wait_status(orders, small, "CANCELLED")
    await orders.result(small)

    client = orders.client
    big_id, small_id = order_workflow_id(big), order_workflow_id(small)
    desc = await client.get_workflow_handle(small_id).describe()
    attrs = desc.typed_search_attributes
    assert attrs.get(ORDER_STATUS) == "CANCELLED"
    # the index holds the customer's keyed hash, never the id itself (it may be an email)
    small_hash = customer_hash("cust-small", orders.settings.customer_hash_secret)
    assert attrs.get(ORDER_TOTAL) == 60_000 and attrs.get(CUSTOMER_ID) == small_hash
    attrs = (await client.get_workflow_handle(big_id).describe()).typed_search_attributes
    assert (attrs.get(ORDER_STATUS), attrs.get(ORDER_TOTAL)) == ("IN_REVIEW", 6_000_000)

    today = datetime.now(UTC).strftime("%Y-%m-%dT00:00:00Z")
    cancelled = await ids(client, CANCELLED_TODAY.format(today=today), {small_id})
    assert small_id in cancelled and big_id not in cancelled
    in_review = await ids(client, HIGH_VALUE_IN_REVIEW, {big_id})
    assert big_id in in_review and small_id not in in_review
    big_hash = customer_hash("cust-big", orders.settings.customer_hash_secret)
    by_customer = await ids(client, f"CustomerId = '{big_hash}'", {big_id})
    assert big_id in by_customer

    readme = README.read_text()
    assert HIGH_VALUE_IN_REVIEW in readme
    assert CANCELLED_TODAY.split(" AND CloseTime")[0] in readme
    block = readme.split("### Temporal UI searches", 1)[1].split("```")[1]
    queries = [q for q in block.splitlines() if q.strip() and not q.startswith("#")]
    assert len(queries) == 4
    for query in queries:  # each one the server accepts
        [_ async for _ in client.list_workflows(query, limit=1)]
