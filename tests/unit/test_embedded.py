"""The servers the project starts: a start that fails leaves no process behind, a slow one waits."""

from __future__ import annotations

import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from app import embedded
from app.web.codec import codec_endpoint
from orderflow.errors import OrderflowError
from orderflow.settings import Settings
from tests import temporal_env


def test_a_temporal_start_that_never_listens_in_time_leaves_no_server_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[subprocess.Popen] = []
    real_popen = subprocess.Popen

    def popen(*args: object, **kwargs: object) -> subprocess.Popen:
        proc = real_popen(*args, **kwargs)  # type: ignore[call-overload]
        started.append(proc)
        return proc

    def never_listens(*args: object, **kwargs: object) -> None:
        raise OrderflowError("nothing listened within 60s")  # as a start under heavy load

    monkeypatch.setattr(embedded.subprocess, "Popen", popen)
    monkeypatch.setattr(embedded, "wait_for_port", never_listens)
    with pytest.raises(OrderflowError, match="nothing listened"):
        embedded.start_temporal(
            port=embedded.free_port(), ui_port=None, db_file=None, log=tmp_path / "t.log"
        )
    assert len(started) == 1
    assert started[0].poll() is not None, "the dev server was left running"


@pytest.mark.parametrize("start", [temporal_env.start_time_skipping, temporal_env.start_local])
async def test_the_suites_temporal_server_starts_on_a_machine_that_needs_more_than_5s(
    tmp_path: Path, start: Callable[..., Awaitable[WorkflowEnvironment]]
) -> None:
    """CI once gave the session's server 5 s, it needed more, and 150 tests failed at setup."""
    slow = tmp_path / "slow-temporal"
    # The binary itself is slow to come up (a cold disk, a loaded machine): not a wait in the test.
    slow.write_text(f'#!/bin/sh\nsleep 6\nexec "{temporal_env.TEMPORAL_BIN}" "$@"\n')
    slow.chmod(0o755)
    async with await start(str(slow)) as environment:
        assert await environment.client.count_workflows() is not None


def test_the_dev_servers_ui_decodes_at_the_codec_endpoint_and_a_headless_one_has_none() -> None:
    """`make run` points the UI at the HTTP app's codec (app/runner.py, app/web/codec.py)."""
    endpoint = codec_endpoint(Settings(http_port=8123))
    assert endpoint == "http://localhost:8123/codec"
    args = embedded.temporal_dev_server_args(
        port=7233, ui_port=8233, db_file=None, codec_endpoint=endpoint
    )
    assert args[args.index("--ui-codec-endpoint") + 1] == endpoint
    headless = embedded.temporal_dev_server_args(
        port=7233, ui_port=None, db_file=None, codec_endpoint=endpoint
    )
    assert "--headless" in headless and "--ui-codec-endpoint" not in headless
