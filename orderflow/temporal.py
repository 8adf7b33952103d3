"""Connecting to Temporal and the custom search attributes the project keeps current."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.common import SearchAttributeKey

from orderflow.settings import Settings

ORDER_STATUS = SearchAttributeKey.for_keyword("OrderStatus")
ORDER_TOTAL = SearchAttributeKey.for_float("OrderTotal")
CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")

# `temporal server start-dev --search-attribute NAME=TYPE` arguments for the keys above
SEARCH_ATTRIBUTE_ARGS = ["OrderStatus=Keyword", "OrderTotal=Double", "CustomerId=Keyword"]


async def connect(settings: Settings) -> Client:
    """A client for the configured server and namespace."""
    return await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
