"""The ERP behind one interface: HTTP to a configured URL, or a local stand-in that records."""

from __future__ import annotations

import json
from typing import Any, Protocol

import httpx
from sqlalchemy import insert, update
from sqlalchemy.engine import Engine

from orderflow.db import ErpRecord, table, utcnow

ERP_RECORDS = table(ErpRecord)


class Erp(Protocol):
    """Where confirmed orders are pushed and physical stock counts come from."""

    name: str

    def push_order(self, order_id: str, payload: dict[str, Any]) -> str:
        """Send one confirmed order; returns the ERP's reference."""
        ...

    def stock_counts(self) -> dict[str, int] | None:
        """Physical units per SKU, or None when the ERP offers no counts."""
        ...


class HttpErp:
    """POST {url}/orders and GET {url}/stock; a non-2xx answer raises so the activity retries."""

    name = "http"

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def push_order(self, order_id: str, payload: dict[str, Any]) -> str:
        """POST the order with an idempotency key so a retry is not a second order."""
        response = httpx.post(
            f"{self.url}/orders",
            json=payload,
            timeout=self.timeout,
            headers={"Idempotency-Key": order_id},
        )
        response.raise_for_status()
        return f"{self.url}/orders ({response.status_code})"

    def stock_counts(self) -> dict[str, int] | None:
        """GET the physical counts as {sku: units}."""
        response = httpx.get(f"{self.url}/stock", timeout=self.timeout)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return {str(k): int(v) for k, v in response.json().items()}


class LocalErp:
    """Stands in for an ERP when none is configured: keeps what it received in the database."""

    name = "local"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def push_order(self, order_id: str, payload: dict[str, Any]) -> str:
        """Record the order once (a repeat overwrites the same row)."""
        text = json.dumps(payload, sort_keys=True)
        with self.engine.begin() as conn:  # Core: one UPDATE per repeat, no ORM per order
            updated = conn.execute(
                update(ERP_RECORDS).where(ERP_RECORDS.c.order_id == order_id).values(payload=text)
            )
            if updated.rowcount == 0:
                conn.execute(
                    insert(ERP_RECORDS).values(
                        order_id=order_id, payload=text, received_at=utcnow()
                    )
                )
        return "local ERP record"

    def stock_counts(self) -> dict[str, int] | None:
        """The stand-in has no warehouse to count."""
        return None


def make_erp(url: str, engine: Engine) -> Erp:
    """HTTP ERP when a URL is configured, else the local stand-in."""
    return HttpErp(url) if url else LocalErp(engine)
