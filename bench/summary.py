"""`make bench`: every benchmark once, each with its own in-run baseline, then one summary table.

Runs each script with `--json` in turn (they start their own servers), keeps its last line, and
prints one row per figure: the ratio against the baseline the script ran beside it, the CPU per
unit where the script measures it, and the issue's goal. The machine's load average before and
after each script is printed too: a figure taken on a busy machine says so.
Usage: python bench/summary.py [--only NAME ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
Figures = dict[str, Any]
Row = tuple[str, str, str]  # measure, figure, goal


def _orders(f: Figures) -> list[Row]:
    return [
        ("orders/s ÷ no-op workflows/s", f"{f['ratio']:.3f}×", "≥ 0.6×"),
        ("worker CPU per order / per no-op", f"{f['cpu_ms_order_worker']} / {f['cpu_ms_noop_worker']} ms", ""),
    ]  # fmt: skip


def _bridge(f: Figures) -> list[Row]:
    rounds = f["rounds"]

    def span(key: str) -> str:
        values = [r[key] for r in rounds]
        return f"{min(values):.3f}–{max(values):.3f}×"

    ours = [r["ours_redis_cpu_ms_per_1k"] for r in rounds]
    node = [r["node_redis_cpu_ms_per_1k"] for r in rounds]
    return [
        (f"bridge processing ÷ Node BullMQ ({len(rounds)} rounds)", span("process_ratio"), "≥ 1.0× every round"),
        ("bridge enqueue ÷ Node BullMQ", span("enqueue_ratio"), "≥ 1.2×"),
        ("Redis CPU per 1k jobs, ours / Node's", f"{min(ours)}–{max(ours)} / {min(node)}–{max(node)} ms", "≤ Node's"),
    ]  # fmt: skip


def _webhooks(f: Figures) -> list[Row]:
    ratio, confirm = f["ingest_ratio"], f["confirm"]
    return [
        ("webhook ingest ÷ minimal app (new events)", f"{ratio['new_events']:.3f}×", "≥ 0.8×"),
        ("webhook ingest ÷ minimal app (redeliveries)", f"{ratio['redeliveries']:.3f}×", ""),
        ("webhook POST → CONFIRMED p50 / p99", f"{confirm['confirmed_p50_ms']} / {confirm['confirmed_p99_ms']} ms", "≤ 35 / 50 ms"),
    ]  # fmt: skip


def _cli(f: Figures) -> list[Row]:
    return [("`orderflow --help` ÷ its old imports", f"{f['help_ratio']:.3f}×", "")]


def _checkout(f: Figures) -> list[Row]:
    ratio = f["ratios"]["one_call_p50_over_start_then_checkout_p50"]
    return [("checkout in one call ÷ start-then-checkout, p50", f"{ratio:.3f}×", "< 1×")]


def _order_api(f: Figures) -> list[Row]:
    return [
        ("order API ÷ OrderClient, start (minimal ÷ start_order)", f"{f['http_over_client']:.3f}×", "≥ 0.8×"),
        ("order API ÷ OrderClient, with the state (POST ÷ place)", f"{f['http_place_over_place']:.3f}×", ""),
    ]  # fmt: skip


BENCHES: dict[str, tuple[list[str], Callable[[Figures], list[Row]]]] = {
    "orders": (["orders.py"], _orders),
    "bridge": (["bridge.py", "--rounds", "3"], _bridge),
    "webhooks": (["webhooks.py"], _webhooks),
    "cli": (["cli.py"], _cli),
    "checkout": (["checkout.py"], _checkout),
    "order_api": (["order_api.py"], _order_api),
}


def run(name: str) -> Figures:
    """One benchmark's `--json` line; a failed one is reported and the others still run."""
    script, *args = BENCHES[name][0]
    done = subprocess.run(
        [sys.executable, str(HERE / script), *args, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"bench/{script} exited {done.returncode}: {done.stderr[-400:]}")
    figures: Figures = json.loads(lines[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(BENCHES), default=list(BENCHES))
    parser.add_argument("--json", action="store_true", help="every script's figures, one line")
    args = parser.parse_args()
    rows: list[Row] = []
    found: dict[str, Any] = {}
    for name in args.only:
        before = os.getloadavg()[0]
        print(f"bench/{BENCHES[name][0][0]} …", file=sys.stderr, flush=True)
        try:
            found[name] = run(name)
            rows += BENCHES[name][1](found[name])
        except (RuntimeError, KeyError, ValueError) as err:
            found[name] = {"error": str(err)}
            rows.append((f"{name}: FAILED", str(err)[:60], ""))
        rows.append(
            (
                f"  (load average before / after {name})",
                f"{before:.1f} / {os.getloadavg()[0]:.1f}",
                "",
            )
        )
    if args.json:
        print(json.dumps({"cpus": os.cpu_count(), "benches": found}))
        return
    width = max(len(r[0]) for r in rows)
    fig = max(len(r[1]) for r in rows)
    print(f"{'measure':<{width}}  {'figure':<{fig}}  goal")
    for measure, figure, goal in rows:
        print(f"{measure:<{width}}  {figure:<{fig}}  {goal}")
    failed = [n for n, f in found.items() if "error" in f]
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
