"""Webhook ingress: verify the signature over the raw body, enqueue once, answer at once."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from bridge.connect import redis_client
from bridge.errors import InvalidJobOptionsError, PayloadRejectedError
from bridge.scripts import rate_limit_script
from orderflow.settings import Settings
from payments import providers
from payments.events import EventKind, GatewayEvent, MalformedEventError
from payments.providers import WebhookProvider
from payments.signatures import SignatureError

log = logging.getLogger(__name__)
# the rate limit is asked no longer: a Redis that accepts but does not answer must not hold the
# request (the enqueue then answers 503 within settings.webhook_enqueue_timeout_seconds)
RATE_LIMIT_SECONDS = 1.0
# the one free-text field of a webhook job (the gateway's message); every other field is an id,
# an amount or a kind the guard does not screen by value (WEBHOOK_SYSTEM_FIELDS)
FREE_TEXT_FIELD = "data.reason"


class JobQueue(Protocol):
    """Where accepted events go: BullMQ's `add(name, data, opts)` (a producer or a Queue)."""

    async def add(self, name: str, data: Any, opts: Any = ...) -> Any:
        """Add one job; an existing jobId makes it a no-op.

        Args:
            name: The webhook job name (a `WebhookJob`).
            data: The job's data, plain JSON.
            opts: BullMQ job options; the ingress passes the jobId made from the event id.

        Returns:
            The job's id (ignored by the ingress).

        Raises:
            InvalidJobOptionsError: The queue refuses the job for good (answered 422).
            PayloadRejectedError: The queue refuses the data for good (answered 422, except a
                secret in the gateway's free text, which is withheld and the job added again).
            Exception: Anything else (Redis down, no answer in time) is answered 503, so the
                gateway delivers the event again.
        """
        ...


class PayloadTooLarge(Exception):
    """The body is larger than `webhook_max_body_bytes`."""


def _error(status: int, error: str, detail: str, **extra: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than `limit` bytes without reading them all."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over {limit} bytes, the limit")
        chunks.append(chunk)
    return b"".join(chunks)


def client_address(request: Request, header: str) -> str:
    """The client's IP address: the TCP peer, or the last entry a trusted proxy put in `header`."""
    peer = request.client.host if request.client else "unknown"
    if not header:
        return peer
    forwarded = request.headers.get(header, "").split(",")[-1].strip()
    try:
        return str(ipaddress.ip_address(forwarded))
    except ValueError:
        return peer


class RateLimiter:
    """A sliding-window request budget per client, kept in Redis so every replica shares it.

    If Redis cannot answer within RATE_LIMIT_SECONDS, requests pass (the enqueue then answers 503
    by itself).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        limit: int | None = None,
        window_seconds: int | None = None,
        scope: str = "ingress",
    ) -> None:
        """A limiter of the webhook endpoints, or of another `scope` with its own budget.

        Args:
            settings: Redis and, by default, the webhook budget (webhook_rate_limit per
                webhook_rate_window_seconds).
            limit: requests per window for this scope; 0 switches it off.
            window_seconds: the window's length.
            scope: names the Redis keys, so each scope counts apart (`api`: the order API).
        """
        self.limit = settings.webhook_rate_limit if limit is None else limit
        window = settings.webhook_rate_window_seconds if window_seconds is None else window_seconds
        self.window_ms = window * 1000
        self.prefix = f"{settings.queue_prefix}:orderflow-{scope}-rate:"
        self.client = redis_client(
            settings.redis_url, name=f"orderflow:{scope}-rate", prefix=settings.queue_prefix
        )
        self.script = self.client.register(rate_limit_script())
        self.failing = False

    async def wait_seconds(self, who: str) -> int:
        """0 if the client may go on, else the seconds until its budget has room again."""
        if self.limit <= 0:
            return 0
        try:
            # asyncio.timeout, not wait_for: no task of its own per request on the hot path
            async with asyncio.timeout(RATE_LIMIT_SECONDS):
                wait_ms = await self.client.run(
                    self.script, [self.prefix + who], [self.limit, self.window_ms, uuid.uuid4().hex]
                )
        except Exception as err:  # fail open: the limiter must not take the endpoint down
            if not self.failing:
                log.warning("webhook rate limit not applied, Redis failing: %s", err)
                self.failing = True
            return 0
        if self.failing:
            log.warning("webhook rate limit applied again")
            self.failing = False
        answer = int(wait_ms)  # negative: granted (minus the grant time); else ms to wait
        return math.ceil(answer / 1000) if answer > 0 else 0


class WebhookIngress:
    """Receives one provider's webhook: rate limit, size, signature, parse, then the queue."""

    def __init__(self, settings: Settings, queue: JobQueue) -> None:
        self.settings = settings
        self.queue = queue
        self.limiter = RateLimiter(settings)

    async def accept(self, webhook: WebhookProvider, request: Request) -> JSONResponse:
        """Answer one delivery: 2xx once the event is queued (or ignored), else why not."""
        provider, settings = webhook.name, self.settings
        who = client_address(request, settings.webhook_client_ip_header)
        if wait := await self.limiter.wait_seconds(who):
            return JSONResponse(
                {"error": "rate_limited", "detail": f"too many requests from {who}; retry later"},
                status_code=429,
                headers={"Retry-After": str(wait)},
            )
        try:
            body = await read_body(request, settings.webhook_max_body_bytes)
        except PayloadTooLarge as err:
            return _error(413, "payload_too_large", f"{provider} webhook refused: {err}")
        try:
            webhook.verify(body, request.headers, settings)
        except SignatureError as err:
            log.warning("%s", err)
            return _error(400, "invalid_signature", str(err), provider=provider)
        try:
            event = providers.parse_event(provider, body, request.headers)
        except MalformedEventError as err:
            log.warning("%s", err)
            return _error(400, "malformed_event", str(err), provider=provider)
        if event.kind == EventKind.IGNORED:
            return JSONResponse(
                {"status": "ignored", "event_id": event.event_id, "type": event.type}
            )
        return await self.enqueue(event)

    async def add(self, event: GatewayEvent) -> None:
        """Queue the event; text the payload guard refuses is withheld, the event is kept."""
        try:
            await self.queue.add(event.job_name, event.to_job(), {"jobId": event.job_id})
        except PayloadRejectedError as err:
            if err.field != FREE_TEXT_FIELD:
                raise
            # a signed event after the money moved is kept: only the gateway's text, which
            # echoed something that must not sit in Redis, is withheld
            log.warning(
                "%s event %s: its text is withheld from the queue: %s",
                event.provider,
                event.event_id,
                err.problem,
            )
            kept = dataclasses.replace(event, reason=f"[withheld: {err.problem}]")
            await self.queue.add(kept.job_name, kept.to_job(), {"jobId": kept.job_id})

    async def enqueue(self, event: GatewayEvent) -> JSONResponse:
        """Queue the event within the timeout: 200, a 422 the gateway need not retry, or 503."""
        timeout = self.settings.webhook_enqueue_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                await self.add(event)
        except (InvalidJobOptionsError, PayloadRejectedError) as err:
            # the queue refuses this event for good (too large, a secret in it, an impossible id):
            # a 4xx with the reason, not a 503 that the gateway would redeliver for days
            log.warning("%s event %s refused by the queue: %s", event.provider, event.event_id, err)
            return _error(
                422,
                "unacceptable_event",
                f"{event.provider} event {event.event_id} cannot be queued: {err}",
                provider=event.provider,
            )
        except Exception as err:
            # the gateway redelivers on any non-2xx: a 503 loses nothing
            log.exception("could not enqueue %s event %s", event.provider, event.event_id)
            if isinstance(err, TimeoutError):
                err = TimeoutError(f"no answer within {timeout}s")
            return _error(
                503,
                "enqueue_failed",
                f"{event.provider} event {event.event_id} not queued "
                f"({type(err).__name__}: {err}); retry later",
            )
        return JSONResponse(
            {
                "status": "accepted",
                "event_id": event.event_id,
                "job_id": event.job_id,
                "type": event.type,
            }
        )

    def route(self, webhook: WebhookProvider) -> Callable[[Request], Awaitable[JSONResponse]]:
        """The endpoint of one provider."""

        async def receive(request: Request) -> JSONResponse:
            return await self.accept(webhook, request)

        receive.__doc__ = f"A {webhook.title} event, signed in `{webhook.signature_header}`."
        return receive


def webhook_router(settings: Settings, queue: JobQueue) -> APIRouter:
    """`POST /webhooks/<name>` for every provider in the registry (payments.providers)."""
    router = APIRouter(prefix="/webhooks", tags=["webhooks"])
    ingress = WebhookIngress(settings, queue)
    for webhook in providers.all_providers():
        router.add_api_route(
            f"/{webhook.name}",
            ingress.route(webhook),
            methods=["POST"],
            name=f"{webhook.name}_webhook",
            summary=f"{webhook.title} webhook",
        )
    return router
