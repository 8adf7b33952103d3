"""`orderflow --help` answers at once: help for any command imports none of the heavy libraries.

Each case runs the real console entry point in a fresh interpreter (imports are per process), then
lists which heavy packages got imported on the way to printing the help. (pydantic is not in
the list: typer itself imports it to parse a subcommand's options.)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("temporalio", "sqlalchemy", "sqlmodel", "fastapi", "opentelemetry", "redis", "bullmq")

PROBE = """
import sys
sys.argv = ["orderflow", *sys.argv[1:]]
from app.cli import app
try:
    app()
except SystemExit:
    pass
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(HEAVY))
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["orders", "--help"],
        ["orders", "pay", "--help"],
        ["queues", "--help"],
        ["reviews", "--help"],
        ["db", "--help"],
        ["webhooks", "--help"],
        ["deploy", "--help"],
        ["deploy", "drained", "--help"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_help_imports_no_heavy_library(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{PROBE}", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Usage" in done.stdout, done.stdout + done.stderr
    heavy = [line for line in done.stderr.splitlines() if line.startswith("HEAVY=")]
    assert heavy == ["HEAVY="], f"orderflow {' '.join(argv)} imported: {heavy}"


def test_a_command_with_temporal_unreachable_says_where_it_looked_in_one_line(
    tmp_path: Path,
) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "ORDERFLOW_TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "ORDERFLOW_DB_URL": f"sqlite:///{tmp_path}/cli.db",
    }
    done = subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", "orders", "status", "o-1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    assert f"cannot reach Temporal at 127.0.0.1:{port}" in done.stderr
    assert "ORDERFLOW_TEMPORAL_ADDRESS" in done.stderr


@pytest.mark.parametrize("argv", [["queues", "counts"], ["queues", "failed", "email"]])
def test_queues_with_redis_unreachable_says_where_it_looked_without_the_password(
    argv: list[str],
) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "ORDERFLOW_REDIS_URL": f"redis://:s3cret-pw@127.0.0.1:{port}/0"}
    done = subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert f"cannot reach Redis at redis://127.0.0.1:{port}/0 (ORDERFLOW_REDIS_URL)" in done.stderr
    assert "s3cret-pw" not in done.stdout + done.stderr
