"""Connecting to Temporal and the custom search attributes the project keeps current."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.runtime import Runtime

from orderflow.settings import Settings

ORDER_STATUS = SearchAttributeKey.for_keyword("OrderStatus")
ORDER_TOTAL = SearchAttributeKey.for_float("OrderTotal")
CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")

# `temporal server start-dev --search-attribute NAME=TYPE` arguments for the keys above
SEARCH_ATTRIBUTE_ARGS = ["OrderStatus=Keyword", "OrderTotal=Double", "CustomerId=Keyword"]


async def connect(settings: Settings, *, runtime: Runtime | None = None) -> Client:
    """A client for the configured server and namespace, traced (workers built from it too)."""
    # imported here: workflow code imports this module (inside the sandbox) for the keys above
    from orderflow.temporal_tracing import CausalTracingInterceptor

    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        interceptors=[CausalTracingInterceptor()],
        runtime=runtime,
    )
