"""What every CLI module shares: running an async command with clear errors."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, TypeVar

import typer

from orderflow.errors import OrderflowError

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
