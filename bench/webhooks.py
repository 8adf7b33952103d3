"""Signed webhooks/s accepted on loopback, and latency from webhook POST to order CONFIRMED.

Starts its own redis-server, Temporal dev server (in memory), SMTP sink and SQLite database in a
temporary folder. The HTTP app runs in a child process (uvicorn, one process, as `orderflow run`
serves it), so the load generator does not share its CPU budget with the event loop it measures.

1. ingest: `--requests` distinct signed Stripe events, `--concurrency` at a time, against the
   HTTP app alone (no worker draining the queue); then the same events again (all deduplicated).
   The baseline, bench/minimal_ingest.py (verify the HMAC, one SET NX + LPUSH), takes the same
   requests from the same generator by turns with it; `ingest_ratio` is orderflow's rate ÷ the
   baseline's.
2. confirm: `--orders` orders one at a time (latency at low load, not queueing): start the order,
   wait for PENDING_PAYMENT, POST a signed `payment_intent.succeeded`, poll until CONFIRMED.
   The child runs the HTTP app, the bridge workers (webhook + email) and the Temporal workers.

Usage: python bench/webhooks.py [--requests N] [--concurrency C] [--orders M] [--json]
With --json, one line of results: {"bench": "webhooks", "ingest": {...}, "confirm": {...}}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from sqlmodel import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import embedded
from app.client import OrderClient
from orderflow.settings import Settings
from payments.providers import signed_headers
from payments.providers.stripe import stripe_payment_succeeded

STATUS_POLL_SECONDS = 0.005  # the CONFIRMED wait polls the status query this often
SKU = "BENCH-WEBHOOK-SKU"


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


# ---- the child: HTTP app (+ workers in "full" mode) -------------------------------------------


async def serve(mode: str) -> None:
    """Run the HTTP app (and in full mode every worker) until SIGTERM."""
    from app.client import OrderClient
    from app.temporal import connect
    from app.web.app import create_app, http_server
    from orderflow.contracts.mail import EMAIL_QUEUE
    from orderflow.contracts.payment import WEBHOOK_QUEUE
    from orderflow.db import make_engine
    from orderflow.schema import upgrade
    from workers.bridge import run_bridge_workers
    from workers.queues import producer_for
    from workers.temporal import Dependencies, build_workers

    settings = Settings.from_env()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    webhook_queue = producer_for(settings, WEBHOOK_QUEUE)
    tasks: list[asyncio.Task[object]] = []
    workers = []
    if mode == "full":
        engine = make_engine(settings.db_url)
        upgrade(engine)
        client = await connect(settings)
        email_queue = producer_for(settings, EMAIL_QUEUE)
        deps = Dependencies.from_settings(settings, engine, email_queue)
        workers = build_workers(client, settings, deps)
        tasks += [asyncio.create_task(w.run()) for w in workers]
        orders = OrderClient(client, settings, engine)
        tasks.append(asyncio.create_task(run_bridge_workers(settings, stop, orders=orders)))
    server = http_server(settings, create_app(settings, webhook_queue))
    tasks.append(asyncio.create_task(server.serve()))
    await stop.wait()
    server.should_exit = True
    await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
    await asyncio.gather(*tasks, return_exceptions=True)
    await webhook_queue.close()


MINIMAL_PORT = [0]


def start_minimal(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """The baseline app (bench/minimal_ingest.py) on a free port, once it listens."""
    MINIMAL_PORT[0] = port = embedded.free_port()
    script = Path(__file__).with_name("minimal_ingest.py")
    argv = [sys.executable, str(script), str(port), settings.redis_url]
    argv += [settings.stripe_webhook_secret, str(settings.webhook_tolerance_seconds)]
    proc = subprocess.Popen(argv, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    embedded.wait_for_port("127.0.0.1", port, timeout=60, proc=proc)
    return proc


def ingest_ratios() -> None:
    """orderflow's ingest ÷ the minimal app's, driven by the same generator in the same run."""
    ours, base = RESULTS["ingest"], RESULTS["minimal"]
    assert isinstance(ours, dict) and isinstance(base, dict)
    for label in ("new_events", "redeliveries"):
        ratio = ours[label]["per_second"] / base[label]["per_second"]
        RESULTS.setdefault("ingest_ratio", {})[label] = round(ratio, 3)  # type: ignore[index]
        say(f"ingest ÷ minimal ({label}): {ratio:.3f}×")


def start_child(mode: str, settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """The child process serving the app on settings.http_port, once it listens."""
    env = {
        **os.environ,
        "ORDERFLOW_DATA_DIR": str(settings.data_dir),
        "ORDERFLOW_REDIS_URL": settings.redis_url,
        "ORDERFLOW_TEMPORAL_ADDRESS": settings.temporal_address,
        "ORDERFLOW_HTTP_PORT": str(settings.http_port),
        "ORDERFLOW_SMTP_PORT": str(settings.smtp_port),
        "ORDERFLOW_WEBHOOK_RATE_LIMIT": str(settings.webhook_rate_limit),
    }
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", mode],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    embedded.wait_for_port("127.0.0.1", settings.http_port, timeout=60, proc=proc)
    return proc


# ---- the benchmark ----------------------------------------------------------------------------


def raw_post(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """One HTTP/1.1 keep-alive POST, as bytes on the wire."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {len(body)}\r\n{head}\r\n"
    ).encode() + body


async def connection(
    host: str, port: int, requests: list[bytes], latencies: list[float], statuses: dict[int, int]
) -> None:
    """Send `requests` one after another on one keep-alive connection, reading each answer."""
    reader, writer = await asyncio.open_connection(host, port)
    for request in requests:
        t0 = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - t0)
        status = int(head.split(b" ", 2)[1])
        statuses[status] = statuses.get(status, 0) + 1
    writer.close()
    await writer.wait_closed()


async def wait_for_status(orders: OrderClient, order_id: str, status: str, since: float) -> None:
    """Poll the status query until the order reaches `status` (polling is what is timed)."""
    while (await orders.status(order_id)).status != status:
        if time.perf_counter() - since > 60:
            raise SystemExit(f"order {order_id} not {status} within 60 s")
        await asyncio.sleep(STATUS_POLL_SECONDS)


RESULTS: dict[str, object] = {}  # what --json prints, filled by the phases


def say(line: str) -> None:
    """Print a human-readable result line (not with --json)."""
    if not RESULTS.get("json"):
        print(line)


INGEST_ROUNDS = 4  # the two apps take turns, a slice of the events each turn


async def ingest(settings: Settings, requests: int, concurrency: int, minimal_port: int) -> None:
    """POST `requests` distinct signed events, then all again, to orderflow and to the minimal
    app by turns (INGEST_ROUNDS slices each, so a change in the machine's load hits both); print
    each one's rates, orderflow's ÷ the minimal app's, and the jobs queued.

    The load comes from `concurrency` raw keep-alive connections: httpx's client tops out near
    400 requests/s on this machine and would measure itself, not the app.
    """
    from bullmq import Queue

    host = settings.http_host
    apps = {"ingest": settings.http_port, "minimal": minimal_port}
    wire: dict[str, list[bytes]] = {app: [] for app in apps}
    for i in range(requests):
        for app, port in apps.items():
            event_id = f"evt_bench_{app}_{i}"
            body = stripe_payment_succeeded(f"bench-{i}", 10000, event_id=event_id)
            headers = {
                "Content-Type": "application/json",
                **signed_headers("stripe", body, settings),
            }
            wire[app].append(raw_post(host, port, "/webhooks/stripe", body, headers))
    for label in ("new events", "redeliveries"):
        spent = dict.fromkeys(apps, 0.0)
        latencies: dict[str, list[float]] = {app: [] for app in apps}
        statuses: dict[str, dict[int, int]] = {app: {} for app in apps}
        for turn in range(INGEST_ROUNDS):
            for app, port in apps.items():
                batch = wire[app][turn::INGEST_ROUNDS]
                started = time.perf_counter()
                await asyncio.gather(
                    *(
                        connection(host, port, batch[k::concurrency], latencies[app], statuses[app])
                        for k in range(concurrency)
                    )
                )
                spent[app] += time.perf_counter() - started
        for app in apps:
            found = latencies[app]
            RESULTS.setdefault(app, {})[label.replace(" ", "_")] = {  # type: ignore[index]
                "per_second": round(requests / spent[app]),
                "p50_ms": round(pct(found, 50) * 1000, 1),
                "p99_ms": round(pct(found, 99) * 1000, 1),
                "statuses": statuses[app],
            }
            say(
                f"{app} ({label}): {requests} signed webhooks in {spent[app]:.2f}s = "
                f"{requests / spent[app]:,.0f}/s accepted over {concurrency} connections; "
                f"response p50 {pct(found, 50) * 1000:.1f} ms, "
                f"p99 {pct(found, 99) * 1000:.1f} ms; status codes {statuses[app]}"
            )
    queue = Queue("payment-webhook-queue", {"connection": settings.redis_url})
    waiting = (await queue.getJobCounts("waiting"))["waiting"]
    await queue.obliterate(force=True)  # the confirm phase must not drain these first
    await queue.close()
    RESULTS.setdefault("ingest", {})["jobs_queued"] = waiting  # type: ignore[index]
    say(f"ingest: {waiting} jobs on payment-webhook-queue for {2 * requests} POSTs")
    ingest_ratios()


async def confirm(settings: Settings, orders_n: int) -> None:
    """Latency from webhook POST to CONFIRMED, one order at a time."""
    from app.temporal import connect
    from orderflow.db import Product, make_engine
    from orderflow.schema import upgrade

    engine = make_engine(settings.db_url)
    upgrade(engine)
    with Session(engine) as session:
        if session.get(Product, SKU) is None:
            session.add(Product(sku=SKU, name="bench", price=129_900, on_hand=orders_n + 100))
            session.commit()
    orders = OrderClient(await connect(settings), settings, engine)
    url = f"http://{settings.http_host}:{settings.http_port}/webhooks/stripe"
    accepted: list[float] = []
    confirmed: list[float] = []
    async with httpx.AsyncClient(timeout=30) as http:
        for i in range(orders_n + 1):  # the first is a warm-up, not counted
            order_id = f"bench-{uuid.uuid4().hex[:10]}"
            await orders.start_order(order_id, "bench", f"{order_id}@example.com", [(SKU, 1)])
            await wait_for_status(orders, order_id, "PENDING_PAYMENT", time.perf_counter())
            body = stripe_payment_succeeded(order_id, 129900)
            headers = signed_headers("stripe", body, settings)
            t0 = time.perf_counter()
            response = await http.post(url, content=body, headers=headers)
            t1 = time.perf_counter()
            assert response.status_code == 200, response.text
            await wait_for_status(orders, order_id, "CONFIRMED", t0)
            if i:
                accepted.append(t1 - t0)
                confirmed.append(time.perf_counter() - t0)
    RESULTS["confirm"] = {
        "orders": orders_n,
        "accepted_p50_ms": round(pct(accepted, 50) * 1000, 1),
        "confirmed_p50_ms": round(pct(confirmed, 50) * 1000, 1),
        "confirmed_p99_ms": round(pct(confirmed, 99) * 1000, 1),
        "confirmed_mean_ms": round(statistics.mean(confirmed) * 1000, 1),
        "confirmed_max_ms": round(max(confirmed) * 1000, 1),
    }
    say(
        f"confirm: {orders_n} orders, one at a time: POST -> 200 p50 "
        f"{pct(accepted, 50) * 1000:.1f} ms; POST -> CONFIRMED p50 "
        f"{pct(confirmed, 50) * 1000:.0f} ms, p99 {pct(confirmed, 99) * 1000:.0f} ms, "
        f"mean {statistics.mean(confirmed) * 1000:.0f} ms, max {max(confirmed) * 1000:.0f} ms"
    )


async def main() -> None:
    """Start the servers, run both phases, stop everything."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--orders", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print one JSON line of results")
    args = parser.parse_args()
    RESULTS["json"] = args.json

    from app.smtp_sink import SmtpSink

    tmp = Path(tempfile.mkdtemp(prefix="orderflow-bench-webhooks-"))
    redis_url = f"redis://127.0.0.1:{embedded.free_port()}/0"
    redis = embedded.start_redis(url=redis_url, data_dir=tmp / "redis", log=tmp / "redis.log")
    temporal_port = embedded.free_port()
    temporal = embedded.start_temporal(
        port=temporal_port, ui_port=None, db_file=None, log=tmp / "temporal.log"
    )
    sink = SmtpSink(tmp / "mail", "127.0.0.1", embedded.free_port()).start()
    settings = Settings(
        data_dir=tmp,
        redis_url=redis_url,
        temporal_address=f"127.0.0.1:{temporal_port}",
        http_port=embedded.free_port(),
        smtp_port=sink.port,
        # every POST of the run from one client (127.0.0.1) fits the ingress budget: the limiter
        # still runs on each request, and refuses none (the default, 3,000 a minute, would
        # answer the redeliveries and the confirm phase 429)
        webhook_rate_limit=2 * args.requests + args.orders + 100,
    )
    child = None
    try:
        child = start_child("http", settings, tmp / "http.log")
        minimal = start_minimal(settings, tmp / "minimal.log")
        try:
            await ingest(settings, args.requests, args.concurrency, MINIMAL_PORT[0])
        finally:
            embedded.stop(minimal)
        embedded.stop(child)
        settings = settings.model_copy(update={"http_port": embedded.free_port()})
        child = start_child("full", settings, tmp / "full.log")
        await confirm(settings, args.orders)
    finally:
        if child is not None:
            embedded.stop(child)
        sink.stop()
        embedded.stop(temporal)
        embedded.stop(redis)
    if args.json:
        del RESULTS["json"]
        print(json.dumps({"bench": "webhooks", "cpus": os.cpu_count(),
                          "load1": round(os.getloadavg()[0], 2), **RESULTS, "logs": str(tmp)}))  # fmt: skip
    else:
        print(f"logs in {tmp}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        asyncio.run(serve(sys.argv[2]))
    else:
        asyncio.run(main())
