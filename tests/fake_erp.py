"""A stand-in ERP over real HTTP: records the orders pushed to it and serves stock counts."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeErp:
    """POST /orders is recorded (keyed by Idempotency-Key); GET /stock serves `stock`."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.posts = 0
        self.stock: dict[str, int] = {}
        self.fail_next = 0  # answer this many POSTs with 503 first
        erp = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if erp.fail_next > 0:
                    erp.fail_next -= 1
                    self._answer(503, {"error": "try later"})
                    return
                erp.posts += 1
                erp.orders[self.headers["Idempotency-Key"]] = body
                self._answer(201, {"ok": True})

            def do_GET(self) -> None:
                self._answer(200, erp.stock)

            def _answer(self, status: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FakeErp:
        """Serve in a background thread."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
