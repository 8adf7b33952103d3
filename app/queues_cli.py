"""`orderflow queues …`: inspect and operate the bridge queues (tables for people, --json for scripts).

With no command it also shows the Temporal task queues (backlog, pollers), so one command shows
every queue of the system.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from app.backends import check_redis
from app.cli_support import connect_or_explain
from app.cli_support import run_command as _run
from orderflow.errors import OrderflowError

if TYPE_CHECKING:  # imported when a command runs, so `--help` stays light
    from app.task_queues import TaskQueueState
    from bridge.admin import QueueAdmin
    from bridge.specs import QueueSpec
    from orderflow.settings import Settings

T = TypeVar("T")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
QueueArg = Annotated[str, typer.Argument(help="Queue name (or a unique prefix, e.g. 'email')")]
DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# `orderflow queues` waits no longer for Temporal: the bridge queues are shown even if it is down
TEMPORAL_CONNECT_SECONDS = 5.0
BRIDGE_COLUMNS = ["queue", "waiting", "active", "delayed", "prioritized", "completed", "failed"]
BRIDGE_COLUMNS += ["dlq", "is_paused", "completed_recent", "failed_recent"]
TASK_QUEUE_COLUMNS = ["task_queue", "type", "backlog", "backlog_age_seconds", "pollers"]
TASK_QUEUE_COLUMNS += ["add_rate", "dispatch_rate"]

queues_app = typer.Typer(
    help="Bridge queues (counts, failed jobs, retries, DLQ, cleaning, pause/resume, job details)"
    " and, with no command, the Temporal task queues (backlog, pollers).",
    invoke_without_command=True,
)
dlq_app = typer.Typer(help="Dead-letter queues: list, re-drive, purge.", no_args_is_help=True)
queues_app.add_typer(dlq_app, name="dlq")


def parse_duration(text: str) -> float:
    """Seconds in '90', '30s', '15m', '12h' or '7d'."""
    match = DURATION.match(text.strip())
    if not match:
        raise OrderflowError(f"duration {text!r} is not like 30s, 15m, 12h or 7d")
    return float(match[1]) * UNIT_SECONDS[match[2]]


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain-text table of `columns` from `rows`."""
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any, width: int = 60) -> str:
    if isinstance(value, dict | list):
        value = json.dumps(value, separators=(",", ":"))
    text = "" if value is None else str(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") if ms else ""


def _emit(data: Any, as_json: bool, text: Callable[[], str]) -> None:
    typer.echo(json.dumps(data, indent=2, default=str) if as_json else text())


def _settings_and_specs() -> tuple[Settings, dict[str, QueueSpec]]:
    from orderflow.settings import Settings
    from workers.queues import queue_specs

    settings = Settings.from_env()
    return settings, queue_specs(settings)


async def _admin(queue: str) -> QueueAdmin:
    from bridge.admin import QueueAdmin, find_spec

    settings, specs = _settings_and_specs()
    spec = find_spec(specs, queue)
    await check_redis(settings.redis_url)
    return QueueAdmin(spec, settings.redis_url)


@queues_app.callback()
def queues_main(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """With no command: every bridge queue (getJobCounts, DLQ, throughput) and task queue."""
    if ctx.invoked_subcommand is None:
        _run(_overview)(as_json)


@queues_app.command("counts")
def counts(as_json: JsonOpt = False) -> None:
    """Counts of every queue per state, its DLQ size, and jobs finished in the last 5 minutes."""
    _run(_counts)(as_json)


async def _bridge_rows(settings: Settings, specs: dict[str, QueueSpec]) -> list[dict[str, Any]]:
    from bridge.admin import QueueAdmin

    await check_redis(settings.redis_url)
    rows = []
    for spec in specs.values():
        admin = QueueAdmin(spec, settings.redis_url)
        try:
            rows.append((await admin.counts()).to_dict())
        finally:
            await admin.close()
    return rows


async def task_queue_states(settings: Settings) -> list[TaskQueueState]:
    """The task queues of every Temporal worker, from the configured server and namespace."""
    from app.task_queues import describe_task_queues
    from workers.temporal import TASK_QUEUES

    client = await connect_or_explain(settings, TEMPORAL_CONNECT_SECONDS)
    return await describe_task_queues(client, TASK_QUEUES)


async def _counts(as_json: bool) -> None:
    rows = await _bridge_rows(*_settings_and_specs())
    _emit(rows, as_json, lambda: table(rows, BRIDGE_COLUMNS))


async def _overview(as_json: bool) -> None:
    settings, specs = _settings_and_specs()
    errors: dict[str, str] = {}  # "bridge" / "temporal" → why that part is missing
    bridge: list[dict[str, Any]] = []
    temporal: list[dict[str, Any]] = []
    try:
        bridge = await _bridge_rows(settings, specs)
    except OrderflowError as err:
        errors["bridge"] = str(err)
    try:
        temporal = [q.to_dict() for q in await task_queue_states(settings)]
    except OrderflowError as err:
        errors["temporal"] = str(err)
    data: dict[str, Any] = {"bridge": bridge, "temporal": temporal}
    data.update({f"{part}_error": error for part, error in errors.items()})

    def text() -> str:
        lines = ["Bridge queues (BullMQ)"]
        lines.append(table(bridge, BRIDGE_COLUMNS) if "bridge" not in errors else "(not shown)")
        lines += ["", f"Temporal task queues ({settings.temporal_namespace})"]
        lines.append(
            table(temporal, TASK_QUEUE_COLUMNS) if "temporal" not in errors else "(not shown)"
        )
        return "\n".join(lines)

    _emit(data, as_json, text)
    if errors:  # everything readable was shown; a script still learns that a part is missing
        raise OrderflowError("; ".join(errors.values()))


@queues_app.command("failed")
@_run
async def failed(
    queue: QueueArg,
    limit: Annotated[int, typer.Option(help="At most this many, newest first")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Failed jobs with their reason, attempts made and data."""
    admin = await _admin(queue)
    try:
        rows = [j.to_dict() for j in await admin.failed(limit)]
    finally:
        await admin.close()
    for row in rows:
        row["failed_at"] = _ms(row["finished_on"])
    columns = ["id", "name", "attempts_made", "failed_at", "failed_reason", "data"]
    _emit(rows, as_json, lambda: table(rows, columns) if rows else "no failed jobs")


@queues_app.command("retry")
@_run
async def retry(
    queue: QueueArg,
    job_id: Annotated[str | None, typer.Argument(help="The failed job to retry")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Retry every failed job")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Move a failed job (or all of them) back to waiting; dead-lettered ones leave the DLQ."""
    if not all_ and not job_id:
        raise OrderflowError("retry needs a JOB_ID or --all")
    admin = await _admin(queue)
    try:
        ids = await admin.retry_all() if all_ else [await admin.retry(str(job_id))]
    finally:
        await admin.close()
    _emit({"retried": ids}, as_json, lambda: f"retried {len(ids)}: {', '.join(ids)}".rstrip(": "))


@queues_app.command("clean")
@_run
async def clean(
    queue: QueueArg,
    state: Annotated[str, typer.Option(help="completed, failed, waiting, delayed, ...")] = "failed",
    older_than: Annotated[str, typer.Option(help="Grace, e.g. 7d, 12h, 0")] = "7d",
    limit: Annotated[int, typer.Option(help="At most this many (0: no limit)")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Remove jobs in a state older than the grace (seed: clean(7 days, 'failed'))."""
    admin = await _admin(queue)
    try:
        ids = await admin.clean(state, parse_duration(older_than), limit)
    finally:
        await admin.close()
    _emit(
        {"cleaned": ids, "state": state},
        as_json,
        lambda: f"cleaned {len(ids)} {state} jobs older than {older_than}",
    )


@queues_app.command("pause")
@_run
async def pause(queue: QueueArg) -> None:
    """Pause a queue for every worker; active jobs finish, new ones wait."""
    admin = await _admin(queue)
    try:
        await admin.pause()
    finally:
        await admin.close()
    typer.echo(f"{admin.spec.name}: paused")


@queues_app.command("resume")
@_run
async def resume(queue: QueueArg) -> None:
    """Resume a paused queue."""
    admin = await _admin(queue)
    try:
        await admin.resume()
    finally:
        await admin.close()
    typer.echo(f"{admin.spec.name}: resumed")


@queues_app.command("job")
@_run
async def job(queue: QueueArg, job_id: str, as_json: JsonOpt = False) -> None:
    """One job: state, progress, attempts, failure, data and its log lines."""
    admin = await _admin(queue)
    try:
        info = (await admin.job(job_id)).to_dict()
    finally:
        await admin.close()

    def text() -> str:
        fields = ["id", "name", "state", "progress", "attempts_made", "failed_reason", "data"]
        lines = [f"{f:<14} {_cell(info[f], 200)}" for f in fields]
        lines.append(f"{'finished':<14} {_ms(info['finished_on'])}")
        lines.append("logs:" if info["logs"] else "logs: (none)")
        lines += [f"  {line}" for line in info["logs"]]
        return "\n".join(lines)

    _emit(info, as_json, text)


@dlq_app.command("list")
@_run
async def dlq_list(
    queue: QueueArg,
    limit: Annotated[int, typer.Option(help="At most this many, oldest first")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Dead-lettered jobs: why they failed for good, after how many attempts, and their data."""
    admin = await _admin(queue)
    try:
        rows = [asdict(e) for e in await admin.dead_letters(limit)]
    finally:
        await admin.close()
    for row in rows:
        row["failed"] = _ms(row["failed_at"])
        if not as_json:
            row.pop("stacktrace", None)
    columns = ["id", "name", "attempts_made", "unrecoverable", "failed", "failed_reason", "data"]
    _emit(rows, as_json, lambda: table(rows, columns) if rows else "DLQ is empty")


@dlq_app.command("redrive")
@_run
async def dlq_redrive(
    queue: QueueArg,
    job_id: Annotated[str | None, typer.Argument(help="The dead-lettered job")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Re-drive every entry")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Send dead-lettered jobs back to their queue with fresh attempts."""
    if not all_ and not job_id:
        raise OrderflowError("redrive needs a JOB_ID or --all")
    admin = await _admin(queue)
    try:
        ids = await admin.dlq.redrive_all() if all_ else [await admin.dlq.redrive(str(job_id))]
    finally:
        await admin.close()
    _emit({"redriven": ids}, as_json, lambda: f"re-drove {len(ids)}: {', '.join(ids)}")


@dlq_app.command("purge")
@_run
async def dlq_purge(
    queue: QueueArg,
    job_id: Annotated[
        str | None, typer.Argument(help="One entry (default: all with --all)")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Purge every entry")] = False,
    keep_jobs: Annotated[bool, typer.Option(help="Keep the failed jobs themselves")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Forget dead-lettered jobs (and delete the failed jobs unless --keep-jobs)."""
    if not all_ and not job_id:
        raise OrderflowError("purge needs a JOB_ID or --all")
    admin = await _admin(queue)
    try:
        if not all_:
            await admin.dlq.get(str(job_id))  # an unknown id is an error, not "purged 0"
        n = await admin.dlq.purge(None if all_ else job_id, remove_jobs=not keep_jobs)
    finally:
        await admin.close()
    _emit({"purged": n}, as_json, lambda: f"purged {n} DLQ entries")
