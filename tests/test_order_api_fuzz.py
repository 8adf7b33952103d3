"""The order API fuzzed from its own OpenAPI document (schemathesis), against the real app under
uvicorn on the session's Temporal, workers and databases: no answer is a 5xx, every answer is
one the document describes (status, media type, body schema), and no order it started is left
in a status that does not exist. ORDERFLOW_API_FUZZ_EXAMPLES sets the examples per operation
(`make test`: a few; more for a longer hunt)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.client import OrderClient
from orderflow.contracts.order import OrderStatus
from orderflow.db import Order
from orderflow.settings import LOCAL_API_KEY, Settings
from tests.helpers import served_ops

EXAMPLES = int(os.environ.get("ORDERFLOW_API_FUZZ_EXAMPLES", "6"))
AUTH = {"Authorization": f"Bearer {LOCAL_API_KEY}"}


def fuzz(base_url: str, document: dict[str, Any], examples: int) -> tuple[list[str], set[str]]:
    """Every API operation with `examples` generated requests: what failed, in words, and the
    operations that were called."""
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    called: set[str] = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        if not operation.path.startswith("/api/v1/"):
            continue  # the webhooks and probes have their own tests

        @settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,  # the same requests on every run: a failure reproduces
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            response = case.call(base_url=base_url, headers=AUTH, timeout=30)
            called.add(f"{case.method} {case.operation.path}")
            try:
                assert response.status_code < 500, f"{response.status_code}: {response.text}"
                # a schema-valid order may still name a SKU the catalogue lacks, or no id at all
                # (the body's or the Idempotency-Key's): a 422 a schema cannot foresee
                case.validate_response(response, excluded_checks=[positive_data_acceptance])
            except AssertionError as err:
                failures.append(f"{case.method} {case.formatted_path}: {err}")
                raise
            except Exception as err:  # schemathesis' own check failures
                failures.append(f"{case.method} {case.formatted_path}: {err}")
                raise

        try:
            run()
        except Exception:
            pass  # recorded above, with the request that failed
    return failures, called


async def test_the_api_fuzzed_from_its_own_schema_answers_no_5xx_and_only_what_it_documents(
    settings: Settings, redis_url: str, orders: OrderClient, engine: Engine
) -> None:
    with Session(engine) as session:
        before = set(session.exec(select(Order.id)).all())
    async with served_ops(settings, redis_url, orders, engine, "fuzz") as (base, _, _):
        async with httpx.AsyncClient() as http:
            document = (await http.get(f"{base}/api/v1/openapi.json")).json()
        failures, called = await asyncio.to_thread(fuzz, base, document, EXAMPLES)
    assert not failures, "\n".join(failures[:10])
    assert len(called) == 10, called  # every operation of the API was fuzzed
    with Session(engine) as session:
        started = session.exec(select(Order).where(col(Order.id).not_in(before))).all()
    assert all(order.status in set(OrderStatus) for order in started), started
