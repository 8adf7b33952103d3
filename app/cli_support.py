"""What every CLI module shares: running an async command with clear errors."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from orderflow.errors import OrderflowError

if TYPE_CHECKING:
    from temporalio.client import Client

    from orderflow.settings import Settings

T = TypeVar("T")


def run_command(fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run an async command; an OrderflowError becomes a one-line message and exit code 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        import asyncio  # here, not at the top: `orderflow --help` need not load it

        try:
            return asyncio.run(fn(*args, **kwargs))
        except OrderflowError as err:
            typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from err

    return wrapper


async def connect_or_explain(settings: Settings, seconds: float = 10.0) -> Client:
    """A Temporal client, or an OrderflowError saying where we looked (never a traceback)."""
    import asyncio

    from app.temporal import connect

    try:
        return await asyncio.wait_for(connect(settings), seconds)
    except (TimeoutError, RuntimeError) as err:  # the SDK's connection failure, or no answer
        first_line = str(err).splitlines()[0] if str(err) else f"no answer in {seconds:g} s"
        raise OrderflowError(
            f"cannot reach Temporal at {settings.temporal_address} (ORDERFLOW_TEMPORAL_ADDRESS, "
            f"namespace {settings.temporal_namespace}): {first_line}"
        ) from err


def redact_url(url: str) -> str:
    """`url` without its user and password (safe to print)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def check_redis_or_explain(redis_url: str, seconds: float = 5.0) -> None:
    """Return once Redis answers a PING, or raise an OrderflowError saying where we looked.

    The queue commands' BullMQ reads retry a refused connection without end; a shell command
    should say at once that Redis is not there (and never print the URL's password).
    """
    import asyncio

    from bridge.redis_client import RedisClient, RedisReplyError

    client = RedisClient(redis_url, name="orderflow:cli")
    try:
        await asyncio.wait_for(client.execute("PING"), seconds)
    except (OSError, TimeoutError, RedisReplyError) as err:
        reason = str(err).splitlines()[0] if str(err) else f"no answer in {seconds:g} s"
        raise OrderflowError(
            f"cannot reach Redis at {redact_url(redis_url)} (ORDERFLOW_REDIS_URL): {reason}"
        ) from err
    finally:
        await client.close()
