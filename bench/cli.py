"""How fast the `orderflow` command answers: help, against what the same help cost before.

Each case runs in a fresh interpreter (imports are per process), `--runs` times; the figure is
the median wall time and the median user+system CPU of the child. The baseline, run in the same
script on the same machine, is what `orderflow --help` imported before its imports were made lazy
(temporalio's client, SQLModel, the bridge's admin with Redis and OpenTelemetry, the order client),
so `ratio` is the help's cost as a share of the old one; a bare interpreter start is shown for
scale.

Usage: python bench/cli.py [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDERFLOW = [sys.executable, "-c", "from app.cli import main; main()"]
CASES: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "old --help imports (baseline)": [
        sys.executable,
        "-c",
        "import temporalio.client, sqlmodel, bridge.admin, app.client, app.cli",
    ],
    "orderflow --help": [*ORDERFLOW, "--help"],
    "orderflow orders pay --help": [*ORDERFLOW, "orders", "pay", "--help"],
    "orderflow queues --help": [*ORDERFLOW, "queues", "--help"],
}


def measure(argv: list[str], runs: int) -> tuple[float, float]:
    """Median wall seconds and median child CPU seconds (user + system) over `runs` runs."""
    walls, cpus = [], []
    for _ in range(runs):
        before = os.times()
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
        after = os.times()
        cpus.append(
            (after.children_user - before.children_user)
            + (after.children_system - before.children_system)
        )
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="one machine-readable line")
    args = parser.parse_args()
    results = {name: measure(argv, args.runs) for name, argv in CASES.items()}
    base_wall, base_cpu = results["old --help imports (baseline)"]
    help_wall, help_cpu = results["orderflow --help"]
    if args.json:
        print(
            json.dumps(
                {
                    "bench": "cli",
                    "runs": args.runs,
                    "help_wall_s": round(help_wall, 3),
                    "help_cpu_s": round(help_cpu, 3),
                    "baseline_wall_s": round(base_wall, 3),
                    "baseline_cpu_s": round(base_cpu, 3),
                    "help_ratio": round(help_wall / base_wall, 3),
                    "help_cpu_ratio": round(help_cpu / base_cpu, 3),
                    "cases": {n: [round(w, 3), round(c, 3)] for n, (w, c) in results.items()},
                }
            )
        )
        return
    print(f"median of {args.runs} runs, each a fresh interpreter")
    for name, (wall, cpu) in results.items():
        print(f"  {name:<32} wall {wall * 1000:7.0f} ms   cpu {cpu * 1000:7.0f} ms")
    print(
        f"orderflow --help ÷ old help imports: {help_wall / base_wall:.2f} (wall), "
        f"{help_cpu / base_cpu:.2f} (cpu)"
    )


if __name__ == "__main__":
    main()
