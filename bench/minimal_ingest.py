"""The ingest benchmark's baseline: the least a webhook endpoint must do, as a FastAPI app.

It verifies the same Stripe signature (`t=…,v1=…`: HMAC-SHA256 of `t.body` with the webhook
secret, within the tolerance, constant-time compare), reads the event id, and does one Redis
`SET NX` (dedupe) and, for a new event, one `LPUSH` of the body, on the same pipelining client the
bridge uses. No payload guard, size limit, rate limit, tracing, metrics or job format: what is
left of orderflow's ingress cost above this is the price of those guarantees.

Run by bench/webhooks.py as `python bench/minimal_ingest.py PORT REDIS_URL SECRET TOLERANCE`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request, Response

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.redis_client import RedisClient

DEDUPE_SECONDS = 86_400


def minimal_app(redis_url: str, secret: str, tolerance: int) -> FastAPI:
    """POST /webhooks/stripe: verify, dedupe, enqueue; 400 on a bad signature."""
    app = FastAPI(openapi_url=None)
    redis = RedisClient(redis_url, name="minimal-ingest")
    key = secret.encode()

    @app.post("/webhooks/stripe")
    async def stripe(request: Request) -> Response:
        body = await request.body()
        fields = dict(
            part.split("=", 1)
            for part in request.headers.get("stripe-signature", "").split(",")
            if "=" in part
        )
        stamp, given = fields.get("t", ""), fields.get("v1", "")
        if not stamp.isdigit() or abs(time.time() - int(stamp)) > tolerance:
            return Response(status_code=400)
        want = hmac.new(key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, given):
            return Response(status_code=400)
        event_id = json.loads(body)["id"]
        new = await redis.execute("SET", f"minimal:seen:{event_id}", 1, "NX", "EX", DEDUPE_SECONDS)
        if new is not None:
            await redis.execute("LPUSH", "minimal:queue", body)
        return Response(b'{"received":true}', media_type="application/json")

    return app


if __name__ == "__main__":
    port, redis_url, secret, tolerance = sys.argv[1:5]
    app = minimal_app(redis_url, secret, int(tolerance))
    # the same server settings as orderflow's http_server (app/web/app.py)
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", access_log=False)
