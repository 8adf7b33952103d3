"""`GET /ops/customers?id=…`: a customer's orders by the `CustomerId` hash /ops computes.

The search attribute holds a keyed hash, never the customer id (it may be an email), so an
operator types the id, the page computes its hash (`orderflow codec customer-hash` does the same)
and lists the orders Temporal finds under it, with a link to the same search in the Web UI.
"""

# no `from __future__ import annotations`: FastAPI reads the route's annotations at runtime,
# and the credentials dependency is a local of customers_route
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from temporalio.client import Client

from app.backends import TEMPORAL, temporal_location, within
from orderflow.codec import customer_hash
from orderflow.contracts.order import CUSTOMER_ID, ORDER_STATUS, ORDER_TOTAL
from orderflow.errors import OrderflowError
from orderflow.settings import Settings

FOUND_AT_MOST = 100  # orders listed on the page; the Web UI link shows all of them
READ_SECONDS = 5.0


@dataclass
class FoundOrder:
    """One of the customer's orders as Temporal's visibility store has it."""

    workflow_id: str
    status: str
    total: int | None
    url: str


def customers_route(
    router: APIRouter, settings: Settings, client: Client, templates: Jinja2Templates, guard: Any
) -> None:
    """Add `GET /customers` to the ops router (behind the same credentials)."""
    ui = settings.temporal_ui_url or f"http://localhost:{settings.temporal_ui_port}"
    namespace = f"{ui}/namespaces/{settings.temporal_namespace}"

    @router.get("/customers", response_class=HTMLResponse)
    async def customer(
        request: Request,
        user: Annotated[str, Depends(guard)],
        customer_id: Annotated[str, Query(alias="id", max_length=320)] = "",
    ) -> HTMLResponse:
        """The hash of `id` and the orders indexed under it."""
        context: dict[str, Any] = {"user": user, "customer_id": customer_id, "orders": []}
        if customer_id.strip():
            digest = customer_hash(customer_id, settings.customer_hash_secret)
            query = f"WorkflowType = 'OrderWorkflow' AND {CUSTOMER_ID.name} = '{digest}'"
            context |= {"hash": digest, "query": query}
            context["search_url"] = f"{namespace}/workflows?query={quote(query, safe='')}"
            try:
                context["orders"] = await within(
                    TEMPORAL, temporal_location(settings), _find(client, query, namespace),
                    READ_SECONDS,
                )  # fmt: skip
            except OrderflowError as err:
                context["error"] = str(err)
        return templates.TemplateResponse(request, "customer.html.j2", context)


async def _find(client: Client, query: str, namespace: str) -> list[FoundOrder]:
    found = []
    async for run in client.list_workflows(query, limit=FOUND_AT_MOST):
        attributes = run.typed_search_attributes
        closed = run.status.name if run.status is not None else ""
        found.append(
            FoundOrder(
                workflow_id=run.id,
                status=attributes.get(ORDER_STATUS) or closed,
                total=attributes.get(ORDER_TOTAL),
                url=f"{namespace}/workflows/{quote(run.id, safe='')}",
            )
        )
    return found
