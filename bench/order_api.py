"""Orders/s through the HTTP order API against orders/s through `OrderClient`, same run.

Starts its own file-backed Temporal dev server, a redis-server and a SQLite database in a
temporary folder, runs the real workers and the HTTP app (uvicorn, loopback) in this process,
and drives N orders each way with C in flight, in alternating rounds: start the order, report
its payment (the `pay` update, answered at once), and wait until it is CONFIRMED. Prints both
rates, their ratio and this process's CPU per order (workers, app and driver together).
Usage: python bench/order_api.py [--orders N] [--in-flight C] [--rounds R] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from sqlmodel import Session
from temporalio.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import embedded
from app.client import OrderClient
from app.web.app import create_app, http_server
from orderflow.contracts.mail import EMAIL_QUEUE
from orderflow.contracts.order import PaymentReceived
from orderflow.contracts.payment import WEBHOOK_QUEUE
from orderflow.db import Product, make_engine
from orderflow.schema import upgrade
from orderflow.settings import LOCAL_API_KEY, Settings
from workers.queues import producer_for
from workers.temporal import Dependencies, build_workers

SKU = "BENCH-API"
PRICE = 10_000


async def bounded(n: int, in_flight: int, one: Callable[[int], Awaitable[None]]) -> float:
    """Run `one` n times with at most `in_flight` at once; the wall seconds it took."""
    gate = asyncio.Semaphore(in_flight)

    async def slot(i: int) -> None:
        async with gate:
            await one(i)

    started = time.perf_counter()
    await asyncio.gather(*(slot(i) for i in range(n)))
    return time.perf_counter() - started


async def main() -> None:
    """Alternate API and client rounds on one server; print the rates and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=240)
    parser.add_argument("--in-flight", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="orderflow-bench-api-"))
    port = embedded.free_port()
    temporal = embedded.start_temporal(
        port=port, ui_port=None, db_file=tmp / "temporal.db", log=tmp / "temporal.log"
    )
    redis_url = f"redis://127.0.0.1:{embedded.free_port()}/0"
    redis = embedded.start_redis(url=redis_url, data_dir=tmp / "redis", log=tmp / "redis.log")
    try:
        settings = Settings(
            data_dir=tmp,
            redis_url=redis_url,
            temporal_address=f"127.0.0.1:{port}",
            http_port=embedded.free_port(),
            api_rate_limit=0,  # the benchmark is one key sending everything
        )
        engine = make_engine(settings.db_url)
        upgrade(engine)
        with Session(engine) as session:
            session.add(Product(sku=SKU, name="bench", price=PRICE, on_hand=10 * args.orders))
            session.commit()
        client = await Client.connect(settings.temporal_address)
        email_queue = producer_for(settings, EMAIL_QUEUE)
        webhook_queue = producer_for(settings, WEBHOOK_QUEUE)
        workers = build_workers(
            client, settings, Dependencies.from_settings(settings, engine, email_queue)
        )
        tasks = [asyncio.create_task(w.run()) for w in workers]
        orders = OrderClient(client, settings, engine)
        server = http_server(settings, create_app(settings, webhook_queue, orders=orders))
        tasks.append(asyncio.create_task(server.serve()))
        while True:  # uvicorn sets `started` once it listens
            if getattr(server, "started", False):
                break
            await asyncio.sleep(0.05)
        tag = uuid.uuid4().hex[:6]
        base = f"http://127.0.0.1:{settings.http_port}/api/v1"
        headers = {"Authorization": f"Bearer {LOCAL_API_KEY}"}
        limits = httpx.Limits(max_connections=args.in_flight)
        http = httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60)

        async def confirmed(order_id: str) -> None:
            while True:  # the order's confirm path runs after the update's answer
                if (await orders.status(order_id)).status == "CONFIRMED":
                    return
                await asyncio.sleep(0.05)

        async def via_client(i: int) -> None:
            order_id = f"c-{tag}-{uuid.uuid4().hex[:8]}"
            await orders.start_order(order_id, "bench", "bench@example.com", [(SKU, 1)])
            payment = PaymentReceived(payment_id=f"p-{order_id}", amount=PRICE, currency="INR")
            ack = await orders.payment_received(order_id, payment)
            assert ack.accepted, ack
            await confirmed(order_id)

        async def via_http(i: int) -> None:
            order_id = f"h-{tag}-{uuid.uuid4().hex[:8]}"
            body = {
                "order_id": order_id,
                "customer_id": "bench",
                "email": "bench@example.com",
                "items": [{"sku": SKU, "quantity": 1}],
            }
            assert (await http.post("/orders", json=body)).status_code in (201, 202)
            payment = {
                "provider": "simulated",
                "payment_id": f"p-{order_id}",
                "amount": PRICE,
                "currency": "INR",
            }
            answer = await http.post(f"/orders/{order_id}/payments", json=payment)
            assert answer.status_code == 200 and answer.json()["accepted"], answer.text
            await confirmed(order_id)

        await bounded(10, 5, via_client)  # warm up both ways
        await bounded(10, 5, via_http)
        seconds = {"client": 0.0, "http": 0.0}
        cpu = {"client": 0.0, "http": 0.0}
        per_round = max(1, args.orders // args.rounds)
        for _ in range(args.rounds):
            for name, way in (("client", via_client), ("http", via_http)):
                spent = time.process_time()
                seconds[name] += await bounded(per_round, args.in_flight, way)
                cpu[name] += time.process_time() - spent
        await http.aclose()
        server.should_exit = True
        for worker in workers:
            await worker.shutdown()
        await asyncio.gather(*tasks, return_exceptions=True)
        await email_queue.close()
        await webhook_queue.close()
    finally:
        embedded.stop(temporal)
        embedded.stop(redis)
    n = per_round * args.rounds
    rates = {name: n / spent for name, spent in seconds.items()}
    found = {
        "orders_per_way": n,
        "client_orders_per_s": round(rates["client"], 2),
        "http_orders_per_s": round(rates["http"], 2),
        "http_over_client": round(rates["http"] / rates["client"], 3),
        "cpu_ms_per_order_client": round(cpu["client"] * 1000 / n, 2),
        "cpu_ms_per_order_http": round(cpu["http"] * 1000 / n, 2),
    }
    if args.json:
        print(json.dumps(found))
        return
    for name, value in found.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    asyncio.run(main())
