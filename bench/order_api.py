"""Orders/s through the HTTP order API against orders/s through `OrderClient`, same run.

Starts its own file-backed Temporal dev server, a redis-server and a SQLite database in a
temporary folder, runs the real workers in this process and the HTTP app as `orderflow run
--part http` (its own process, as compose runs it; `--app-in-process` for one process). The
order service is another process, as it is in a shop: for each round a driver process (this
script with `--drive WAY`) runs N orders with C in flight one way (WAYS: two pairs, each with
the same answer both ways): start the order, report its payment (the `pay` update, answered at
once), and wait until it is CONFIRMED (every way polls the status with the same Temporal query,
so the instrument costs the same). Rounds alternate between the ways. Prints the rates, each
pair's ratio, the orderflow processes' CPU per order and the driver's.
Usage: python bench/order_api.py [--orders N] [--in-flight C] [--rounds R] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from sqlmodel import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import embedded
from app.client import OrderClient
from app.temporal import connect
from app.web.app import create_app, http_server
from orderflow import codec
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
# Two pairs, each the same answer both ways. client: OrderClient.start_order, and http: POST
# /api/v1/orders with `Prefer: return=minimal` (both answer once Temporal has the start);
# place: OrderClient.place, and http-place: the POST's default answer (both wait for the
# order's state once its stock is checked, update-with-start)
WAYS = ("client", "http", "place", "http-place")


async def bounded(n: int, in_flight: int, one: Callable[[int], Awaitable[None]]) -> float:
    """Run `one` n times with at most `in_flight` at once; the wall seconds it took."""
    gate = asyncio.Semaphore(in_flight)

    async def slot(i: int) -> None:
        async with gate:
            await one(i)

    started = time.perf_counter()
    await asyncio.gather(*(slot(i) for i in range(n)))
    return time.perf_counter() - started


async def drive(way: str, n: int, in_flight: int, temporal: str, base: str) -> None:
    """The order service's side: warm up, say `ready`, wait for `go`, run n orders `way`.

    Prints one JSON line: the wall seconds of the n orders and this process's CPU for them.
    """
    settings = Settings(temporal_address=temporal)
    orders = OrderClient(await connect(settings), settings)
    headers = {"Authorization": f"Bearer {LOCAL_API_KEY}"}
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    http = httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60)
    tag = uuid.uuid4().hex[:6]
    phases: dict[str, list[float]] = {"start": [], "pay": [], "confirm": []}

    def took(phase: str, since: float) -> float:
        now = time.perf_counter()
        phases[phase].append(now - since)
        return now

    async def confirmed(order_id: str) -> None:
        while True:  # the order's confirm path runs after the update's answer
            if (await orders.status(order_id)).status == "CONFIRMED":
                return
            await asyncio.sleep(0.05)

    async def via_client(i: int) -> None:
        order_id, since = f"c-{tag}-{i}", time.perf_counter()
        await orders.start_order(order_id, "bench", "bench@example.com", [(SKU, 1)])
        since = took("start", since)
        payment = PaymentReceived(payment_id=f"p-{order_id}", amount=PRICE, currency="INR")
        ack = await orders.payment_received(order_id, payment)
        assert ack.accepted, ack
        since = took("pay", since)
        await confirmed(order_id)
        took("confirm", since)

    async def via_http(i: int, minimal: bool = True) -> None:
        order_id, since = f"h-{tag}-{i}", time.perf_counter()
        body = {
            "order_id": order_id,
            "customer_id": "bench",
            "email": "bench@example.com",
            "items": [{"sku": SKU, "quantity": 1}],
        }
        prefer = {"Prefer": "return=minimal"} if minimal else {}
        started = await http.post("/orders", json=body, headers=prefer)
        assert started.status_code == (202 if minimal else 201), started.text
        since = took("start", since)
        payment: dict[str, str | int] = {"provider": "simulated", "payment_id": f"p-{order_id}"}
        payment |= {"amount": PRICE, "currency": "INR"}
        answer = await http.post(f"/orders/{order_id}/payments", json=payment)
        assert answer.status_code == 200 and answer.json()["accepted"], answer.text
        since = took("pay", since)
        await confirmed(order_id)
        took("confirm", since)

    async def via_place(i: int) -> None:  # the API's answer (the state once stock is checked)
        order_id, since = f"p-{tag}-{i}", time.perf_counter()
        state = await orders.place(order_id, "bench", "bench@example.com", [(SKU, 1)])
        assert state.status == "PENDING_PAYMENT", state
        since = took("start", since)
        payment = PaymentReceived(payment_id=f"p-{order_id}", amount=PRICE, currency="INR")
        ack = await orders.payment_received(order_id, payment)
        assert ack.accepted, ack
        since = took("pay", since)
        await confirmed(order_id)
        took("confirm", since)

    async def via_http_place(i: int) -> None:
        await via_http(i, minimal=False)

    one = {"client": via_client, "http": via_http, "place": via_place, "http-place": via_http_place}
    one = one[way]
    await bounded(10, 5, lambda i: one(n + i))  # warm up: connections, caches
    for spans in phases.values():
        spans.clear()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    spent = time.process_time()
    seconds = await bounded(n, in_flight, one)
    found = {"seconds": seconds, "cpu": time.process_time() - spent}
    for phase, spans in phases.items():  # the mean wait of each step, summed over the rounds
        found[f"{phase}_ms"] = statistics.fmean(spans) * 1000
    print(json.dumps(found), flush=True)
    await http.aclose()


async def round_of(
    way: str, n: int, in_flight: int, temporal: str, base: str, app_pid: int | None
) -> dict[str, float]:
    """One driver process's round: its wall seconds and CPU, and orderflow's meanwhile (this
    process's workers, and the HTTP app's process when it has its own)."""
    argv = [sys.executable, __file__, "--drive", way, "--orders", str(n)]
    argv += ["--in-flight", str(in_flight), "--temporal", temporal, "--base", base]
    driver = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert driver.stdin is not None and driver.stdout is not None
    line = await driver.stdout.readline()
    assert line.strip() == b"ready", line
    ours = time.process_time() + (cpu_seconds(app_pid) if app_pid else 0.0)
    driver.stdin.write(b"go\n")
    await driver.stdin.drain()
    found = json.loads(await driver.stdout.readline())
    found["server_cpu"] = time.process_time() + (cpu_seconds(app_pid) if app_pid else 0) - ours
    assert await driver.wait() == 0
    return found


def cpu_seconds(pid: int) -> float:
    """A process's user + system CPU so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def app_process(settings: Settings, tmp: Path) -> asyncio.subprocess.Process:
    """`orderflow run --part http` on the bench's servers, as the compose file runs it."""
    env = os.environ | {
        "ORDERFLOW_DATA_DIR": str(tmp),
        "ORDERFLOW_TEMPORAL_ADDRESS": settings.temporal_address,
        "ORDERFLOW_REDIS_URL": settings.redis_url,
        "ORDERFLOW_HTTP_PORT": str(settings.http_port),
        "ORDERFLOW_API_RATE_LIMIT": "0",
        "ORDERFLOW_EMBEDDED_TEMPORAL": "false",
        "ORDERFLOW_EMBEDDED_REDIS": "false",
        "ORDERFLOW_EMBEDDED_SMTP": "false",
        "ORDERFLOW_ALLOW_INSECURE_SECRETS": "true",  # a throwaway topology on loopback
        "ORDERFLOW_ALLOW_SIMULATED_GATEWAY": "true",
    }
    command = [str(Path(sys.executable).with_name("orderflow")), "run", "--part", "http"]
    log = (tmp / "http.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
    )
    async with httpx.AsyncClient(timeout=2) as http:
        for _ in range(600):  # up to a minute
            try:
                if (await http.get(f"http://127.0.0.1:{settings.http_port}/healthz")).is_success:
                    return proc
            except httpx.TransportError:
                pass
            if proc.returncode is not None:
                break
            await asyncio.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the HTTP app did not start; see {tmp / 'http.log'}")


async def main() -> None:
    """Alternate API and client rounds on one server; print the rates and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=240)
    parser.add_argument("--in-flight", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--app-in-process",
        action="store_true",
        help="run the HTTP app in the workers' process (default: its own, `run --part http`)",
    )
    parser.add_argument("--drive", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--temporal", help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        await drive(args.drive, args.orders, args.in_flight, args.temporal, args.base)
        return
    tmp = Path(tempfile.mkdtemp(prefix="orderflow-bench-api-"))
    port = embedded.free_port()
    temporal = embedded.start_temporal(
        port=port, ui_port=None, db_file=tmp / "temporal.db", log=tmp / "temporal.log"
    )
    redis_url = f"redis://127.0.0.1:{embedded.free_port()}/0"
    redis = embedded.start_redis(url=redis_url, data_dir=tmp / "redis", log=tmp / "redis.log")
    per_round = max(1, args.orders // args.rounds)
    totals = {way: {"seconds": 0.0, "cpu": 0.0, "server_cpu": 0.0} for way in WAYS}
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
            stock = 10 * args.orders + 100
            session.add(Product(sku=SKU, name="bench", price=PRICE, on_hand=stock))
            session.commit()
        client = await connect(settings)
        email_queue = producer_for(settings, EMAIL_QUEUE)
        webhook_queue = producer_for(settings, WEBHOOK_QUEUE)
        workers = build_workers(
            client, settings, Dependencies.from_settings(settings, engine, email_queue)
        )
        tasks = [asyncio.create_task(w.run()) for w in workers]
        app: asyncio.subprocess.Process | None = None
        server = None
        if args.app_in_process:  # the old shape: workers and the HTTP app share one process
            orders = OrderClient(client, settings, engine)
            server = http_server(settings, create_app(settings, webhook_queue, orders=orders))
            tasks.append(asyncio.create_task(server.serve()))
            while True:  # uvicorn sets `started` once it listens
                if getattr(server, "started", False):
                    break
                await asyncio.sleep(0.05)
        else:
            app = await app_process(settings, tmp)
        base = f"http://127.0.0.1:{settings.http_port}/api/v1"
        for _ in range(args.rounds):
            for way in WAYS:
                found = await round_of(
                    way,
                    per_round,
                    args.in_flight,
                    settings.temporal_address,
                    base,
                    app.pid if app else None,
                )
                for key, value in found.items():
                    totals[way][key] = totals[way].get(key, 0.0) + value
        if app is not None:
            app.terminate()
            await asyncio.wait_for(app.wait(), 30)
        if server is not None:
            server.should_exit = True
        for worker in workers:
            await worker.shutdown()
        await asyncio.gather(*tasks, return_exceptions=True)
        await email_queue.close()
        await webhook_queue.close()
    finally:
        embedded.stop(temporal)
        embedded.stop(redis)
    topology = "one process" if args.app_in_process else "app apart"
    report(totals, per_round * args.rounds, args.rounds, args.json, topology)


def report(
    totals: dict[str, dict[str, float]], n: int, rounds: int, as_json: bool, topology: str
) -> None:
    """Print the rates, their ratio and CPU per order (orderflow's process, the driver's)."""
    rates = {way: n / spent["seconds"] for way, spent in totals.items()}
    found: dict[str, float | int | str] = {
        "topology": topology,
        "orders_per_way": n,
        "client_orders_per_s": round(rates["client"], 2),
        "http_orders_per_s": round(rates["http"], 2),
        "http_over_client": round(rates["http"] / rates["client"], 3),
        # the pair that waits for the order's state (the POST without a Prefer header)
        "place_orders_per_s": round(rates["place"], 2),
        "http_place_orders_per_s": round(rates["http-place"], 2),
        "http_place_over_place": round(rates["http-place"] / rates["place"], 3),
    }
    for way_name, spent in totals.items():
        way = way_name.replace("-", "_")
        found[f"server_cpu_ms_per_order_{way}"] = round(spent["server_cpu"] * 1000 / n, 2)
        found[f"driver_cpu_ms_per_order_{way}"] = round(spent["cpu"] * 1000 / n, 2)
        for phase in ("start", "pay", "confirm"):  # the mean of the rounds' means
            found[f"{phase}_ms_{way}"] = round(spent[f"{phase}_ms"] / rounds, 1)
    found["load_avg_1m"] = round(os.getloadavg()[0], 2)
    if as_json:
        print(json.dumps(found))
        return
    for name, value in found.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    # customer data encrypted, as a shop runs it; child processes inherit the same key
    os.environ.setdefault("ORDERFLOW_CODEC_KEY", codec.new_key("bench").spec())
    asyncio.run(main())
