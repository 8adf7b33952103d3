"""Gateways over real HTTP for the tests: localstripe, a stalling proxy in front of it, and a
Razorpay fake that answers Razorpay's documented REST shapes (there is no local Razorpay)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx

from app import embedded

LOCALSTRIPE = str(Path(sys.executable).parent / "localstripe")
STRIPE_TEST_KEY = "sk_test_orderflow_localstripe"  # localstripe takes any sk_ key


class LocalStripe:
    """`localstripe --port N --from-scratch` as a child process on a free loopback port."""

    def __init__(self, log: Path) -> None:
        self.port = embedded.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log.open("wb")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, within: float = 20.0) -> LocalStripe:
        """Start it and wait until it answers an authenticated API call."""
        self.proc = subprocess.Popen(
            [LOCALSTRIPE, "--port", str(self.port), "--from-scratch"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + within
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"localstripe exited with {self.proc.returncode}")
            try:
                answer = httpx.get(f"{self.url}/v1/customers", auth=(STRIPE_TEST_KEY, ""))
                if answer.status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"localstripe not answering on {self.url} within {within}s")
            time.sleep(0.05)  # the poll interval of a starting server

    def register_webhook(self, webhook_id: str, url: str, secret: str) -> None:
        """localstripe POSTs every event to `url`, signed with `secret` (Stripe's scheme)."""
        answer = httpx.post(
            f"{self.url}/_config/webhooks/{webhook_id}", data={"url": url, "secret": secret}
        )
        answer.raise_for_status()

    def stop(self) -> None:
        """Terminate the process."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
        self.log.close()


class StallingProxy:
    """A proxy in front of a gateway that records each request's Idempotency-Key and, for the
    first `stall` requests whose path ends with `stall_suffix` (and whose method is
    `stall_method`, if set), forwards them (so the gateway acts) but withholds the answer until
    released: the client sees a read timeout, or with `deliver` the answer once released (it
    comes late: whatever happens meanwhile happens first). Statuses put in `refuse` are
    answered instead, without forwarding (a rate limit, an outage). `rewrite` changes the
    gateway's answers on their way back (what localstripe leaves out or never reaches, such as
    a charge's Radar `outcome` or a refund in `requires_action`)."""

    def __init__(
        self,
        upstream: str,
        stall_suffix: str = "/capture",
        stall: int = 1,
        *,
        stall_method: str = "",
        deliver: bool = False,
        rewrite: Callable[[str, str, bytes], bytes] | None = None,
    ) -> None:
        self.upstream = upstream
        self.stall_suffix = stall_suffix
        self.stall = stall
        self.stall_method = stall_method
        self.deliver = deliver
        # statuses to answer (in order) instead of forwarding, before any stall: 429, 500 ...
        self.refuse: list[int] = []
        # (method, path, body) -> body: how the gateway's answers are changed on their way back
        # (a state localstripe never reaches, e.g. a refund in `requires_action`)
        self.rewrite = rewrite
        self.seen: list[tuple[str, str, str]] = []  # (method, path, Idempotency-Key)
        self.release = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                key = self.headers.get("Idempotency-Key", "")
                proxy.seen.append((self.command, self.path, key))
                if urlparse(self.path).path.endswith(proxy.stall_suffix) and proxy.refuse:
                    status = proxy.refuse.pop(0)
                    error = {"error": {"type": "api_error", "message": f"fault {status}"}}
                    if status == 429:
                        error["error"].update(type="invalid_request_error", code="rate_limit")
                    raw = json.dumps(error).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                    return
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length", "connection")
                }
                answer = httpx.request(
                    self.command,
                    proxy.upstream + self.path,
                    headers=headers,
                    content=body,
                    timeout=30,
                )
                stalls = urlparse(self.path).path.endswith(proxy.stall_suffix) and (
                    not proxy.stall_method or proxy.stall_method == self.command
                )
                if stalls and proxy.stall > 0:
                    proxy.stall -= 1
                    proxy.release.wait(60)  # the gateway acted; its answer is lost (or late)
                    if not proxy.deliver:
                        return
                content = answer.content
                if proxy.rewrite is not None:
                    content = proxy.rewrite(self.command, urlparse(self.path).path, content)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("content-type", ""))
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_DELETE = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def keys(self, suffix: str) -> list[str]:
        """The Idempotency-Keys sent to paths ending with `suffix`, in order."""
        return [k for _, p, k in self.seen if urlparse(p).path.endswith(suffix)]

    def start(self) -> StallingProxy:
        """Serve in a background thread."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Let stalled requests go and stop serving."""
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def _now() -> int:
    return int(time.time())


@dataclass
class FakeRazorpay:
    """Razorpay's REST API as documented (razorpay.com/docs/api): orders, payments, capture,
    refunds, lists; HTTP Basic with key id and secret; errors as `{"error": {"code",
    "description"}}`. `pay` stands in for the customer completing Checkout."""

    key_id: str = "rzp_test_orderflow"
    key_secret: str = "orderflow_fake_secret"
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    captures: int = 0  # capture calls that moved money
    fail_next: int = 0  # answer this many calls with 503 SERVER_ERROR first
    lose_refund_answers: int = 0  # make this many refunds but answer 504 (the answer is lost)

    def __post_init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                data = json.loads(raw) if raw else {}
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                status, body = fake.answer(
                    method, url.path, data, query, self.headers.get("Authorization", "")
                )
                encoded = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(encoded)))
                self.end_headers()
                self.wfile.write(encoded)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.lock = threading.Lock()

    def start(self) -> FakeRazorpay:
        """Serve in a background thread."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()

    # --- the customer's side (Razorpay Checkout), done directly ---

    def pay(self, order_id: str, *, fail: str = "") -> dict[str, Any]:
        """A payment of the order's amount: `authorized` (or `captured` if the order auto-
        captures), or `failed` with `fail` as its error_description."""
        with self.lock:
            order = self.orders[order_id]
            payment = {
                "id": f"pay_{uuid.uuid4().hex[:14]}",
                "entity": "payment",
                "amount": order["amount"],
                "currency": order["currency"],
                "status": "failed" if fail else "authorized",
                "order_id": order_id,
                "method": "card",
                "captured": False,
                "amount_refunded": 0,
                "refund_status": None,
                "notes": dict(order["notes"]),
                "error_code": "BAD_REQUEST_ERROR" if fail else None,
                "error_description": fail or None,
                "created_at": _now(),
            }
            if not fail and order.get("payment_capture", 1):
                payment["status"], payment["captured"] = "captured", True
                self.captures += 1
            self.payments[payment["id"]] = payment
            return dict(payment)

    # --- the API ---

    def answer(
        self, method: str, path: str, data: dict[str, Any], query: dict[str, str], auth: str
    ) -> tuple[int, dict[str, Any]]:
        """One API call: (HTTP status, JSON body)."""
        expected = base64.b64encode(f"{self.key_id}:{self.key_secret}".encode()).decode()
        if auth != f"Basic {expected}":
            return _error(401, "BAD_REQUEST_ERROR", "Authentication failed")
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return _error(503, "SERVER_ERROR", "The server is temporarily unavailable")
            parts = path.strip("/").split("/")[1:]  # after "v1"
            try:
                return self._route(method, parts, data, query)
            except KeyError as err:
                return _error(400, "BAD_REQUEST_ERROR", f"The id provided does not exist: {err}")

    def _route(
        self, method: str, parts: list[str], data: dict[str, Any], query: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        match method, parts:
            case "POST", ["orders"]:
                order = {
                    "id": f"order_{uuid.uuid4().hex[:14]}",
                    "entity": "order",
                    "amount": int(data["amount"]),
                    "amount_paid": 0,
                    "amount_due": int(data["amount"]),
                    "currency": data["currency"],
                    "receipt": data.get("receipt"),
                    "status": "created",
                    "notes": data.get("notes") or [],
                    "payment_capture": int(data.get("payment_capture", 1)),
                    "created_at": _now(),
                }
                self.orders[order["id"]] = order
                return 200, order
            case "GET", ["orders"]:
                found = [
                    o
                    for o in self.orders.values()
                    if o["receipt"] == query.get("receipt", o["receipt"])
                ]
                return 200, _collection(found)
            case "GET", ["orders", order_id, "payments"]:
                self.orders[order_id]
                return 200, _collection(
                    [p for p in self.payments.values() if p["order_id"] == order_id]
                )
            case "GET", ["payments"]:
                since = int(query.get("from", 0))
                count, skip = int(query.get("count", 10)), int(query.get("skip", 0))
                found = sorted(
                    (p for p in self.payments.values() if p["created_at"] >= since),
                    key=lambda p: p["created_at"],
                    reverse=True,
                )
                return 200, _collection(found[skip : skip + count])
            case "GET", ["payments", payment_id]:
                return 200, self.payments[payment_id]
            case "POST", ["payments", payment_id, "capture"]:
                payment = self.payments[payment_id]
                if payment["status"] != "authorized":
                    return _error(
                        400, "BAD_REQUEST_ERROR", "This payment has already been captured"
                    )
                if int(data["amount"]) != payment["amount"]:
                    return _error(
                        400,
                        "BAD_REQUEST_ERROR",
                        "Capture amount must be equal to the amount authorized",
                    )
                payment["status"], payment["captured"] = "captured", True
                self.captures += 1
                return 200, payment
            case "GET", ["payments", payment_id, "refunds"]:
                self.payments[payment_id]
                return 200, _collection(
                    [r for r in self.refunds.values() if r["payment_id"] == payment_id]
                )
            case "POST", ["payments", payment_id, "refund"]:
                payment = self.payments[payment_id]
                amount = int(data.get("amount", payment["amount"]))
                if payment["status"] not in ("captured", "refunded"):
                    return _error(400, "BAD_REQUEST_ERROR", "Payment is not captured")
                if payment["amount_refunded"] + amount > payment["amount"]:
                    return _error(
                        400,
                        "BAD_REQUEST_ERROR",
                        "The refund amount provided is greater than amount captured",
                    )
                refund = {
                    "id": f"rfnd_{uuid.uuid4().hex[:14]}",
                    "entity": "refund",
                    "amount": amount,
                    "currency": payment["currency"],
                    "payment_id": payment_id,
                    "notes": data.get("notes") or [],
                    "receipt": data.get("receipt"),
                    "status": "processed",
                    "speed_processed": "normal",
                    "created_at": _now(),
                }
                self.refunds[refund["id"]] = refund
                payment["amount_refunded"] += amount
                full = payment["amount_refunded"] == payment["amount"]
                payment["refund_status"] = "full" if full else "partial"
                if full:
                    payment["status"] = "refunded"
                if self.lose_refund_answers > 0:
                    self.lose_refund_answers -= 1
                    return _error(504, "SERVER_ERROR", "Gateway timeout")  # refunded all the same
                return 200, refund
        return _error(400, "BAD_REQUEST_ERROR", f"The requested URL was not found: {parts}")


def _collection(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"entity": "collection", "count": len(items), "items": items}


def _error(status: int, code: str, description: str) -> tuple[int, dict[str, Any]]:
    return status, {
        "error": {
            "code": code,
            "description": description,
            "source": "NA",
            "step": "NA",
            "reason": "NA",
            "metadata": {},
        }
    }
