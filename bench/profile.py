"""Where the orders worker's CPU goes: py-spy on bench/orders.py during its orders phase only.

Runs bench/orders.py (workers and client in one process), waits for its orders phase, samples
that process with py-spy (only threads holding the GIL, so waiting is not counted) and prints
the share of samples per area and the top functions, inclusive and self.
Usage: python bench/profile.py [--seconds S] [--raw FILE] [-- bench/orders.py arguments]
py-spy needs ptrace rights (root, or kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY_SPY = Path(sys.executable).with_name("py-spy")
MARKER = "bench: orders phase"

# first matching pattern names the area of a sample (most specific first)
AREAS = [
    ("sandbox: new run (re-import of the workflow module)", r"_create_workflow_instance"),
    (
        "sandbox: import hooks and restrictions",
        r"workflow_sandbox/_importer|workflow_sandbox/_restrictions",
    ),
    ("payload conversion", r"temporalio/converter|bridge/_visitor|_command_aware_visitor"),
    ("workflow code and activations", r"worker/_workflow_instance"),
    ("sandbox: per-activation wrapper", r"workflow_sandbox/"),
    ("tracing interceptor", r"opentelemetry|temporal_tracing|contrib/opentelemetry"),
    ("database (SQLAlchemy + sqlite3)", r"sqlalchemy/|sqlmodel/|sqlite3"),
    ("invoice template (Jinja2)", r"jinja2/"),
    ("email queue (bullmq, redis)", r"bullmq/|redis/"),
    ("bench client and poller", r"main\.<locals>|app/client.py|temporalio/client.py"),
    ("activity worker (poll, threads, complete)", r"worker/_activity.py"),
    ("workflow worker (poll, complete)", r"worker/_workflow.py"),
    ("asyncio / threads", r"asyncio/|concurrent/futures|threading.py"),
]


def summarize(raw: Path, top: int) -> str:
    """The share of samples per area and the top functions of a py-spy raw (collapsed) file."""
    total = 0
    areas: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
        areas[next((name for name, pat in AREAS if re.search(pat, stack)), "other")] += n
    out = [f"{total} samples (GIL held)", "", f"{'area':52} share"]
    out += [f"{name:52} {n / total:6.1%}" for name, n in areas.most_common()]
    out += ["", "inclusive                                                        share"]
    skip = re.compile(
        r"^(<module>|run \(asyncio|Runner\.|BaseEventLoop\.|Handle\._run|Thread\.|_worker \(|_WorkItem)"
    )
    shown = [(f, n) for f, n in inclusive.most_common() if not skip.match(f)][:top]
    out += [f"{f[:64]:64} {n / total:6.1%}" for f, n in shown]
    out += ["", "self                                                             share"]
    out += [f"{f[:64]:64} {n / total:6.1%}" for f, n in own.most_common(top // 2)]
    return "\n".join(out)


def main() -> None:
    """Run the bench, profile its orders phase, print the summary."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=15, help="how long to sample")
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw output here")
    parser.add_argument(
        "bench_args", nargs="*", help="for bench/orders.py (default: --orders 800 --rounds 1)"
    )
    args = parser.parse_args()
    raw = args.raw or Path(tempfile.mkdtemp(prefix="orderflow-profile-")) / "orders.txt"
    bench = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "orders.py"),
            *(args.bench_args or ["--orders", "800", "--rounds", "1"]),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert bench.stderr is not None
    for line in bench.stderr:
        if MARKER in line:
            break
    else:
        sys.exit(f"bench/orders.py ended (exit {bench.wait()}) before its orders phase")
    drain = threading.Thread(target=lambda: [None for _ in bench.stderr or ()], daemon=True)
    drain.start()  # keep the bench's stderr flowing while py-spy samples
    subprocess.run(
        [str(PY_SPY), "record", "--pid", str(bench.pid), "--gil", "--nonblocking",
         "--rate", str(args.rate), "--duration", str(args.seconds), "--format", "raw",
         "--output", str(raw)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    bench.wait()
    print(summarize(raw, args.top))


if __name__ == "__main__":
    main()
