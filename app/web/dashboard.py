"""The ops dashboard (`/ops`): every queue (bridge and Temporal task queues) with charts, failed and
dead-lettered jobs, pending reviews, recent orders.

Behind HTTP Basic (settings.admin_user / admin_password). GET only reads; every change is a POST
form carrying a token signed with settings.dashboard_secret for the signed-in user (Basic
credentials are resent by the browser on any cross-site POST, so the token is what proves the
form came from this page). Any replica holding the secret accepts it, also after a restart.
"""

# no `from __future__ import annotations`: FastAPI must see the local Admin dependency type
import asyncio
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from app.backends import (
    DATABASE,
    REDIS,
    TEMPORAL,
    BackendUnavailableError,
    check_redis,
    database_location,
    redact_url,
    temporal_location,
    within,
)
from app.client import OrderClient
from app.task_queues import describe_task_queues
from app.web import charts
from app.web.ops_customers import customers_route
from bridge.admin import QueueAdmin, find_spec
from bridge.specs import QueueSpec
from orderflow.contracts.order import order_workflow_id
from orderflow.contracts.payment import GatewayMode
from orderflow.contracts.review import PendingReview, ReviewDecision
from orderflow.db import Order, WebhookEvent, reader
from orderflow.errors import OrderflowError
from orderflow.money import format_money
from orderflow.settings import Settings
from orderflow.templating import is_html_template
from payments import providers

TEMPLATES = Path(__file__).parent / "templates"
RECENT_ORDERS = 50  # orders listed on the dashboard, newest first
LISTED_JOBS = 20  # failed jobs and DLQ entries shown per queue
CHART_MINUTES = 60  # the throughput charts cover the last hour, a bar per minute
PROVIDER_WINDOW = timedelta(hours=24)  # the providers' event counts on /ops cover the last day
TIMED_WINDOW_SECONDS = 3600  # processing-time percentiles of the last hour's completed jobs
FORM_TOKEN_TTL_SECONDS = 12 * 3600  # a dashboard left open over a shift can still post
FORM_TOKEN_SKEW_SECONDS = 300  # replicas' clocks may differ this much
# each backend's part of the page waits no longer (they are asked at once): a backend that is
# down leaves its part empty and named, and the page still answers within a few seconds
OPS_READ_SECONDS = 5.0
OPS_DECIDE_SECONDS = 15.0  # a decision is an update: it also waits for a reviews worker to take it
T = TypeVar("T")
# how the header names the gateway's mode: an operator must see at a glance whether money moves
MODE_LABELS = {
    GatewayMode.LIVE: "live",
    GatewayMode.TEST: "test mode: no real money",
    GatewayMode.SIMULATED: "simulated: no money moves",
    GatewayMode.UNKNOWN: "mode unknown: the key is neither live nor test",
}


def order_run_url(settings: Settings, order_id: str) -> str:
    """The order's workflow in the Temporal Web UI."""
    workflow_id = quote(order_workflow_id(order_id), safe="")
    ui = settings.temporal_ui_url or f"http://localhost:{settings.temporal_ui_port}"
    return f"{ui}/namespaces/{settings.temporal_namespace}/workflows/{workflow_id}"


def recent_orders(engine: Engine, limit: int = RECENT_ORDERS) -> list[Order]:
    """The newest orders."""
    with Session(engine) as session:
        return list(
            session.exec(select(Order).order_by(col(Order.created_at).desc()).limit(limit)).all()
        )


def same_secret(given: str, expected: str) -> bool:
    """Constant-time equality that leaks neither where the strings differ nor their lengths."""
    digest = hashlib.sha256
    return hmac.compare_digest(digest(given.encode()).digest(), digest(expected.encode()).digest())


def form_token(secret: str, user: str, issued: int) -> str:
    """The token of the dashboard's forms for `user`, issued at `issued` (Unix seconds)."""
    message = f"orderflow-ops-form\0{user}\0{issued}".encode()
    mac = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"{issued}.{mac}"


def valid_form_token(secret: str, user: str, token: str, now: float) -> bool:
    """True if `token` was signed with `secret` for `user` and is neither expired nor future."""
    issued, _, _ = token.partition(".")
    if not issued.isascii() or not issued.isdigit() or len(issued) > 12:
        return False
    age = now - int(issued)
    if not -FORM_TOKEN_SKEW_SECONDS <= age <= FORM_TOKEN_TTL_SECONDS:
        return False
    return same_secret(token, form_token(secret, user, int(issued)))


def admin_guard(settings: Settings) -> Any:
    """A dependency that answers 401 unless the request carries the admin's Basic credentials."""
    basic = HTTPBasic(auto_error=False, realm="orderflow ops")

    def check(credentials: Annotated[HTTPBasicCredentials | None, Depends(basic)]) -> str:
        ok = credentials is not None and (
            same_secret(credentials.username, settings.admin_user)
            & same_secret(credentials.password, settings.admin_password)
        )
        if not ok or credentials is None:
            raise HTTPException(
                401,
                "admin credentials required",
                {"WWW-Authenticate": 'Basic realm="orderflow ops"'},
            )
        return credentials.username

    return check


@dataclass(frozen=True)
class ProviderRow:
    """One registered webhook provider on `/ops`: its route and the last day's events."""

    name: str
    title: str
    route: str
    signature_header: str
    by_status: dict[str, int]
    last_received: datetime | None


def webhook_providers(engine: Engine, now: datetime | None = None) -> list[ProviderRow]:
    """Every registered provider with its events of the last PROVIDER_WINDOW, by status.

    A provider registered but never heard from shows zeros: a webhook URL not yet set up at the
    provider looks exactly like that. Events of a provider no longer registered are listed too.
    """
    since = (now or datetime.now(UTC)) - PROVIDER_WINDOW
    counts: dict[str, dict[str, int]] = {}
    last: dict[str, datetime] = {}
    with Session(engine) as session:
        rows = session.exec(
            select(
                WebhookEvent.provider,
                WebhookEvent.status,
                func.count(),
                func.max(WebhookEvent.received_at),
            )
            .where(col(WebhookEvent.received_at) >= since)
            .group_by(col(WebhookEvent.provider), col(WebhookEvent.status))
        ).all()
    for provider, status, n, latest in rows:
        counts.setdefault(provider, {})[status] = n
        if latest is not None and (provider not in last or latest > last[provider]):
            last[provider] = latest
    registered = {p.name: p for p in providers.all_providers()}
    return [
        ProviderRow(
            name=name,
            title=registered[name].title if name in registered else f"{name} (not registered)",
            route=f"/webhooks/{name}" if name in registered else "",
            signature_header=registered[name].signature_header if name in registered else "",
            by_status=counts.get(name, {}),
            last_received=last.get(name),
        )
        for name in sorted(registered.keys() | counts.keys())
    ]


@dataclass(frozen=True)
class DatabaseReads:
    """The database's part of `/ops`."""

    reviews: list[PendingReview] = field(default_factory=list)
    latest: list[Order] = field(default_factory=list)
    today: dict[int, dict[str, int]] = field(default_factory=dict)
    providers: list[ProviderRow] = field(default_factory=list)


@dataclass(frozen=True)
class OpsReads:
    """What `/ops` reads from each backend, for one settings/engine pair."""

    settings: Settings
    specs: Mapping[str, QueueSpec]
    engine: Engine
    zone: ZoneInfo

    async def bridge_queues(self) -> list[dict[str, Any]]:
        """Every bridge queue's counts, failed jobs, DLQ and charts (Redis)."""
        await check_redis(self.settings.redis_url, OPS_READ_SECONDS)  # refused: say so at once
        found = []
        for spec in self.specs.values():
            admin = QueueAdmin(spec, self.settings.redis_url)
            try:
                found.append(await self._queue(admin))
            finally:
                await admin.close()
        return found

    async def _queue(self, admin: QueueAdmin) -> dict[str, Any]:
        return {
            "counts": await admin.counts(),
            "failed": await admin.failed(LISTED_JOBS),
            "dlq": await admin.dead_letters(LISTED_JOBS),
            "throughput": charts.throughput_chart(await admin.throughput(CHART_MINUTES), self.zone),
            "processing": charts.processing_chart(
                await admin.processing_times(TIMED_WINDOW_SECONDS)
            ),
            "depth": charts.depth_history_chart(
                await admin.depth_history(CHART_MINUTES), self.zone
            ),
        }

    def database(self) -> DatabaseReads:
        """Pending reviews, recent orders, today's orders by hour and the providers, on one thread.

        Read-only transactions: on SQLite they take no write lock, so a worker's write never
        makes the page wait (and report the database down).
        """
        reads = reader(self.engine)
        return DatabaseReads(
            OrderClient._pending_reviews_from_db(reads),
            recent_orders(reads),
            charts.orders_today(reads, self.zone),
            webhook_providers(reads),
        )


class Outages:
    """The backends that did not answer while one page was read."""

    def __init__(self) -> None:
        self.found: list[BackendUnavailableError] = []

    async def read(self, backend: str, where: str, work: Awaitable[T], empty: T) -> T:
        """What `work` read, or `empty` with the outage noted, within OPS_READ_SECONDS."""
        try:
            return await within(backend, where, work, OPS_READ_SECONDS)
        except BackendUnavailableError as err:
            self.found.append(err)
        except OrderflowError as err:  # e.g. a task queue Temporal did not describe
            self.found.append(BackendUnavailableError(backend, where, str(err)))
        return empty


def page_context(
    settings: Settings,
    user: str,
    queues: list[dict[str, Any]],
    tasks: list[Any],
    db: DatabaseReads,
    outages: Outages,
    zone: ZoneInfo,
) -> dict[str, Any]:
    """The template's context for one `/ops` page (msg and error are added by the route)."""
    down = sorted(outages.found, key=lambda err: err.backend)
    by_status: dict[str, int] = {}
    for order in db.latest:
        by_status[order.status] = by_status.get(order.status, 0) + 1
    return {
        "user": user,
        "token": form_token(settings.dashboard_secret, user, int(time.time())),
        "queues": queues,
        "task_queues": tasks,
        "outages": down,
        "down": {err.backend for err in down},
        "depth_chart": charts.depth_chart([q["counts"] for q in queues], tasks),
        "orders_chart": charts.orders_chart(db.today, zone),
        "zone": zone.key,
        "gateway": f"{settings.gateway.value} ({MODE_LABELS[settings.gateway_mode]})",
        "api_keys": len(settings.api_keys),
        "codec": codec_label(settings),
        "providers": db.providers,
        "reviews": db.reviews,
        "orders": [(o, order_run_url(settings, o.id)) for o in db.latest],
        "by_status": sorted(by_status.items()),
        "now": datetime.now().astimezone(),
        "ms_time": lambda ms: (
            datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else ""
        ),
    }


def codec_label(settings: Settings) -> str:
    """The codec keys in use, by id (never a secret): the current one and how many old ones."""
    try:
        ring = settings.codec_keyring()
    except OrderflowError as err:  # the process could not start like this; say so anyway
        return f"unusable ({err})"
    old = len(ring.ids) - 1
    return f"key {ring.current.key_id}" + (f" (+{old} old)" if old else "")


def back(message: str, error: bool = False) -> RedirectResponse:
    """Back to the dashboard with a flash message (or an error)."""
    return RedirectResponse(
        "/ops?" + urlencode({"error" if error else "msg": message}), status_code=303
    )


def check_form_token(settings: Settings, user: str, token: str) -> None:
    """403 unless the form's token was signed for this user and is fresh."""
    if not valid_form_token(settings.dashboard_secret, user, token, time.time()):
        raise HTTPException(403, "stale or foreign form: reload the dashboard and try again")


def dashboard_router(
    settings: Settings,
    specs: Mapping[str, QueueSpec],
    orders: OrderClient,
    engine: Engine,
    task_queues: Sequence[str],
) -> APIRouter:
    """`GET /ops` and its POST actions (retry, re-drive, decide a review)."""
    templates = Jinja2Templates(
        env=Environment(loader=FileSystemLoader(TEMPLATES), autoescape=is_html_template)
    )
    templates.env.filters["money"] = format_money
    router = APIRouter(prefix="/ops", include_in_schema=False)
    Admin = Annotated[str, Depends(admin_guard(settings))]
    zone = ZoneInfo(settings.report_timezone)
    reads = OpsReads(settings, specs, engine, zone)
    redis_at = redact_url(settings.redis_url)

    def check_token(user: str, token: str) -> None:
        check_form_token(settings, user, token)

    async def on_queue(queue: str, act: Callable[[QueueAdmin], Awaitable[Any]], done: str) -> Any:
        """One queue action within OPS_READ_SECONDS, answered as a flash message."""
        admin = QueueAdmin(find_spec(dict(specs), queue), settings.redis_url)
        try:
            await within(REDIS, redis_at, act(admin), OPS_READ_SECONDS)
        except OrderflowError as err:
            return back(str(err), error=True)
        finally:
            await admin.close()
        return back(done)

    customers_route(router, settings, orders.client, templates, admin_guard(settings))

    @router.get("", response_class=HTMLResponse)
    async def page(request: Request, user: Admin) -> HTMLResponse:
        """The dashboard: what each backend answers within OPS_READ_SECONDS; the rest is named."""
        outages = Outages()
        # the three backends are asked at once: an outage costs the page one time limit, not three
        queues, tasks, db = await asyncio.gather(
            outages.read(REDIS, redis_at, reads.bridge_queues(), []),
            outages.read(
                TEMPORAL,
                temporal_location(settings),
                describe_task_queues(orders.client, task_queues),
                [],
            ),
            outages.read(
                DATABASE,
                database_location(engine),
                asyncio.to_thread(reads.database),
                DatabaseReads(),
            ),
        )
        context = page_context(settings, user, queues, tasks, db, outages, zone)
        context["msg"] = request.query_params.get("msg", "")
        context["error"] = request.query_params.get("error", "")
        return templates.TemplateResponse(request, "dashboard.html.j2", context)

    @router.post("/queues/{queue}/jobs/{job_id}/retry")
    async def retry(queue: str, job_id: str, user: Admin, token: Annotated[str, Form()]) -> Any:
        """Retry a failed job."""
        check_token(user, token)
        return await on_queue(
            queue, lambda admin: admin.retry(job_id), f"{queue}: job {job_id} retried by {user}"
        )

    @router.post("/queues/{queue}/dlq/{job_id}/redrive")
    async def redrive(queue: str, job_id: str, user: Admin, token: Annotated[str, Form()]) -> Any:
        """Re-drive a dead-lettered job."""
        check_token(user, token)
        return await on_queue(
            queue,
            lambda admin: admin.dlq.redrive(job_id),
            f"{queue}: job {job_id} re-driven by {user}",
        )

    _decide_route(router, settings, orders)
    return router


def _decide_route(router: APIRouter, settings: Settings, orders: OrderClient) -> None:
    """`POST /ops/reviews/{id}/decide`: a reviewer's decision, from the dashboard's form."""
    Admin = Annotated[str, Depends(admin_guard(settings))]

    @router.post("/reviews/{review_id}/decide")
    async def decide(
        review_id: str,
        user: Admin,
        token: Annotated[str, Form()],
        approve: Annotated[bool, Form()],
        note: Annotated[str, Form()] = "",
    ) -> Any:
        """Approve or reject a pending review."""
        check_form_token(settings, user, token)
        decision = ReviewDecision(approve=approve, reviewer=user, note=note)
        try:
            outcome = await within(
                TEMPORAL,
                temporal_location(settings),
                orders.decide_review(review_id, decision),
                OPS_DECIDE_SECONDS,
            )
        except OrderflowError as err:
            return back(str(err), error=True)
        verdict = "approved" if outcome.approved else "rejected"
        return back(f"review {review_id} {verdict} by {user}")
