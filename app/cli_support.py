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
    """A Temporal client, or a BackendUnavailableError saying where we looked (no traceback)."""
    from app.backends import TEMPORAL, temporal_location, within
    from app.temporal import connect

    return await within(TEMPORAL, temporal_location(settings), connect(settings), seconds)
