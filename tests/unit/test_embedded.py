"""The embedded servers: a start that fails leaves no server process behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from app import embedded
from orderflow.errors import OrderflowError


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
