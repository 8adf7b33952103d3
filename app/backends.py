"""Is each backend there: Redis, Temporal, the database — asked within a time limit.

The CLI, the `/ops` page and `GET /readyz` ask through here, so an outage reads the same
everywhere: which backend, where (never a password), the setting that points there, and why.
Heavy modules are imported inside the functions: `orderflow --help` need not load them.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from orderflow.errors import OrderflowError
from orderflow.redis_url import (
    is_cluster_url,
    is_sentinel_url,
    redact_cluster_url,
    redact_sentinel_url,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from temporalio.client import Client

    from orderflow.settings import Settings

T = TypeVar("T")
log = logging.getLogger(__name__)
# a page, a probe or a shell command waits no longer for one backend (a load balancer's
# readiness check typically gives up after 5-10 s)
BACKEND_SECONDS = 5.0
REDIS, TEMPORAL, DATABASE = "redis", "temporal", "database"
SETTINGS = {  # the setting an operator changes when a backend is not where we look
    REDIS: "ORDERFLOW_REDIS_URL",
    TEMPORAL: "ORDERFLOW_TEMPORAL_ADDRESS",
    DATABASE: "ORDERFLOW_DATABASE_URL",
}
NAMES = {REDIS: "Redis", TEMPORAL: "Temporal", DATABASE: "the database"}


class BackendUnavailableError(OrderflowError):
    """A backend did not answer in time, or refused: says which, where, and its setting."""

    def __init__(self, backend: str, where: str, reason: str) -> None:
        self.backend, self.setting = backend, SETTINGS[backend]
        super().__init__(f"cannot reach {NAMES[backend]} at {where} ({self.setting}): {reason}")


def redact_url(url: str) -> str:
    """`url` without its user and password (safe to print)."""
    from urllib.parse import urlsplit, urlunsplit

    if is_sentinel_url(url):
        return redact_sentinel_url(url)
    if is_cluster_url(url):
        return redact_cluster_url(url)

    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def database_location(engine: Engine) -> str:
    """The engine's URL without user and password (a SQLite file's path as it is)."""
    url = engine.url.render_as_string(hide_password=False)
    return url if engine.url.get_backend_name() == "sqlite" else redact_url(url)


def _reason(err: BaseException, seconds: float) -> str:
    text = str(getattr(err, "message", "") or err).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(err, TimeoutError) or not first:
        return f"no answer in {seconds:g} s"
    return first


async def within(
    backend: str, where: str, work: Awaitable[T], seconds: float = BACKEND_SECONDS
) -> T:
    """`work`'s result, or a BackendUnavailableError if it fails or takes over `seconds`.

    Any failure but our own errors counts: the drivers raise their own kinds (OSError,
    redis-py's, RPCError, SQLAlchemy's), and what an operator needs is which backend failed and why.
    """
    try:
        return await asyncio.wait_for(work, seconds)
    except OrderflowError:
        raise  # ours say what was wrong already (an unknown job, a backend that is down)
    except Exception as err:
        log.debug("%s at %s: %r", NAMES[backend], where, err, exc_info=True)  # the whole trace
        raise BackendUnavailableError(backend, where, _reason(err, seconds)) from err


async def check_redis(redis_url: str, seconds: float = BACKEND_SECONDS) -> None:
    """Return once Redis answers a PING, or raise a BackendUnavailableError.

    BullMQ's reads (redis-py) retry a refused connection without end; this says at once that
    Redis is not there.
    """
    from bridge.connect import redis_client

    client = redis_client(redis_url, name="orderflow:check")
    try:
        await within(REDIS, redact_url(redis_url), client.execute("PING"), seconds)
    finally:
        await client.close()


async def check_temporal(
    client: Client, settings: Settings, seconds: float = BACKEND_SECONDS
) -> None:
    """Return once the Temporal frontend describes our namespace, or raise."""
    from datetime import timedelta

    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

    request = DescribeNamespaceRequest(namespace=settings.temporal_namespace)
    call = client.workflow_service.describe_namespace(request, timeout=timedelta(seconds=seconds))
    await within(TEMPORAL, temporal_location(settings), call, seconds)


def temporal_location(settings: Settings) -> str:
    """Where we look for Temporal: the frontend's address and the namespace."""
    return f"{settings.temporal_address}, namespace {settings.temporal_namespace}"


def _select_one(engine: Engine) -> None:
    from sqlalchemy import text

    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


# the `SELECT 1` still on its thread, per engine: a database that does not answer holds it
_DATABASE_CHECKS: weakref.WeakKeyDictionary[Engine, asyncio.Future[None]] = (
    weakref.WeakKeyDictionary()
)


async def check_database(engine: Engine, seconds: float = BACKEND_SECONDS) -> None:
    """Return once the database answers `SELECT 1`, or raise (the wait is on a thread).

    One check per engine is on a thread at a time: while one waits on a database that does not
    answer, the next checks wait for that one (each within its own time limit) instead of each
    holding another thread of the process's pool until the database answers again.
    """
    loop = asyncio.get_running_loop()
    running = _DATABASE_CHECKS.get(engine)
    if running is None or running.done() or running.get_loop() is not loop:
        running = asyncio.ensure_future(asyncio.to_thread(_select_one, engine))
        running.add_done_callback(lambda done: done.cancelled() or done.exception())
        _DATABASE_CHECKS[engine] = running
    await within(DATABASE, database_location(engine), asyncio.shield(running), seconds)
