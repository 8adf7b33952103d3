"""The `/ops` charts, drawn on the server as inline SVG (no script, nothing fetched from elsewhere).

Each function turns figures into a `Chart`: rectangles and text with their positions, a title per
rectangle (the browser's tooltip) and `data-*` attributes carrying the counts, so a test or a
script reads the numbers the picture shows. `templates/_charts.html.j2` renders a Chart; the
template is autoescaped, so every label (queue names, statuses) is text, never markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from app.task_queues import TaskQueueState
from bridge.admin import DepthHistory, ProcessingTimes, QueueCounts, Throughput
from orderflow.contracts.order import OrderStatus
from orderflow.db import Order

WIDTH = 620  # every chart is this wide (px): two side by side on a 1400 px page
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 8, 20  # plot margins: y-axis labels left, x-axis labels below
ROW_HEIGHT = 18  # one bar of a horizontal bar chart
LABEL_WIDTH = 210  # room for a queue name left of a horizontal bar
BAR_FILL = 0.8  # share of a column's slot its bar takes
# a DLQ entry is one of the failed jobs: stacking it too would count the job twice
DEPTH_STATES = ("waiting", "active", "delayed", "prioritized", "failed")
STATUS_ORDER = list(OrderStatus)  # legend and stacking order; unknown statuses go last


@dataclass(frozen=True)
class Rect:
    """One bar (or segment of a stacked bar)."""

    x: float
    y: float
    width: float
    height: float
    css: str  # fill, from the page's stylesheet
    title: str
    data: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Label:
    """One piece of text on a chart."""

    x: float
    y: float
    text: str
    anchor: str = "middle"


@dataclass(frozen=True)
class Dot:
    """One point of a line chart."""

    x: float
    y: float
    css: str
    title: str
    data: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Path:
    """A line or a filled area: SVG path data (numbers and M/L/Z only)."""

    d: str
    css: str


@dataclass(frozen=True)
class Chart:
    """Everything the template needs to draw one chart."""

    id: str
    title: str
    width: int
    height: int
    rects: list[Rect]
    labels: list[Label]
    legend: list[tuple[str, str]]  # (css class, text)
    data: dict[str, str] = field(default_factory=dict)
    paths: list[Path] = field(default_factory=list)
    dots: list[Dot] = field(default_factory=list)

    @property
    def axis_y(self) -> int:
        """Where the bars stand (the x axis)."""
        return self.height - BOTTOM


def nice_max(value: float) -> int:
    """The smallest 1, 2 or 5 × 10ⁿ at least `value` (a y-axis top), at least 1."""
    top = 1
    while top < value:
        for step in (2, 5, 10):
            if top * step >= value:
                return top * step
        top *= 10
    return top


def _clock(ms: int, zone: ZoneInfo | None) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(zone).strftime("%H:%M")


def throughput_chart(series: Throughput, zone: ZoneInfo | None = None) -> Chart:
    """Jobs completed (and, stacked on them, failed) in each minute, oldest left."""
    height = 150
    plot_w, plot_h = WIDTH - LEFT - RIGHT, height - TOP - BOTTOM
    slot = plot_w / max(1, len(series.minutes))
    top = nice_max(
        max((c + f for c, f in zip(series.completed, series.failed, strict=True)), default=0)
    )
    rects: list[Rect] = []
    labels = [Label(LEFT - 4, TOP + 8, str(top), "end"), Label(LEFT - 4, TOP + plot_h, "0", "end")]
    for i, (minute, done, failed) in enumerate(
        zip(series.minutes, series.completed, series.failed, strict=True)
    ):
        clock = _clock(minute, zone)
        x = LEFT + i * slot + slot * (1 - BAR_FILL) / 2
        done_h, failed_h = done / top * plot_h, failed / top * plot_h
        base = TOP + plot_h
        for css, count, y, h in (
            ("completed", done, base - done_h, done_h),
            ("failed", failed, base - done_h - failed_h, failed_h),
        ):
            rects.append(
                Rect(x, y, slot * BAR_FILL, h, css, f"{clock}: {count} {css}",
                     {"minute": clock, "count": str(count)})
            )  # fmt: skip
        if i % 15 == 0:
            labels.append(Label(x, height - 5, clock, "start"))
        elif i == len(series.minutes) - 1:
            labels.append(Label(x + slot, height - 5, clock, "end"))
    return Chart(
        id=f"throughput-{series.queue}",
        title=f"{series.queue}: jobs per minute, last {len(series.minutes)} minutes",
        width=WIDTH,
        height=height,
        rects=rects,
        labels=labels,
        legend=[("completed", "completed"), ("failed", "failed")],
        data={
            "queue": series.queue,
            "completed-total": str(sum(series.completed)),
            "failed-total": str(sum(series.failed)),
        },
    )


def _hbars(
    chart_id: str,
    title: str,
    rows: Sequence[tuple[str, Sequence[tuple[str, int, dict[str, str]]]]],
    unit: str,
    legend: list[tuple[str, str]],
    data: dict[str, str] | None = None,
) -> Chart:
    """Horizontal bars, one row per (label, stacked segments of (css, value, data))."""
    height = TOP + BOTTOM + ROW_HEIGHT * max(1, len(rows))
    plot_w = WIDTH - LABEL_WIDTH - RIGHT - 60  # room for the row's total right of its bar
    top = nice_max(max((sum(v for _, v, _ in segs) for _, segs in rows), default=0))
    rects: list[Rect] = []
    labels: list[Label] = []
    for row, (label, segments) in enumerate(rows):
        y = TOP + row * ROW_HEIGHT
        x = float(LABEL_WIDTH)
        labels.append(Label(LABEL_WIDTH - 6, y + ROW_HEIGHT * 0.7, label, "end"))
        for css, value, extra in segments:
            w = value / top * plot_w
            rects.append(
                Rect(x, y + 2, w, ROW_HEIGHT - 4, css, f"{label}: {extra.get('name', css)} {value}{unit}",
                     {"count": str(value), **extra})
            )  # fmt: skip
            x += w
        total = sum(v for _, v, _ in segments)
        labels.append(Label(x + 4, y + ROW_HEIGHT * 0.7, f"{total}{unit}", "start"))
    if not rows:
        labels.append(Label(LABEL_WIDTH, TOP + ROW_HEIGHT * 0.7, "nothing yet", "start"))
    labels.append(Label(LABEL_WIDTH, height - 5, "0", "start"))
    labels.append(Label(LABEL_WIDTH + plot_w, height - 5, f"{top}{unit}", "end"))
    return Chart(chart_id, title, WIDTH, height, rects, labels, legend, data or {})


def processing_chart(times: ProcessingTimes) -> Chart:
    """Processing-time percentiles (processedOn → finishedOn) of the queue's recent jobs."""
    rows = [
        (f"p{p}", [("duration", ms, {"percentile": f"p{p}", "name": "took"})])
        for p, ms in sorted(times.percentiles.items())
    ]
    if times.percentiles:
        rows.append(
            ("max", [("duration-max", times.max_ms, {"percentile": "max", "name": "took"})])
        )
    return _hbars(
        f"processing-{times.queue}",
        f"{times.queue}: processing time of the last hour's {times.jobs} completed jobs (ms)",
        rows,
        " ms",
        [("duration", "processedOn → finishedOn")],
        {"queue": times.queue, "jobs": str(times.jobs)},
    )


def depth_chart(counts: Sequence[QueueCounts], task_queues: Sequence[TaskQueueState]) -> Chart:
    """How many jobs and tasks wait (and run, and failed) in every queue, now."""
    rows: list[tuple[str, Sequence[tuple[str, int, dict[str, str]]]]] = []
    for c in counts:
        values = {s: getattr(c, s) for s in DEPTH_STATES}
        rows.append(
            (c.queue, [(s, values[s], {"queue": c.queue, "state": s, "name": s}) for s in DEPTH_STATES])
        )  # fmt: skip
    for q in task_queues:
        label = f"{q.task_queue} ({q.type} tasks)"
        rows.append(
            (label, [("backlog", q.backlog,
                      {"queue": q.task_queue, "type": q.type, "state": "backlog", "name": "backlog"})])
        )  # fmt: skip
    legend = [(s, s) for s in DEPTH_STATES] + [("backlog", "Temporal backlog")]
    return _hbars(
        "depth", "Queue depth now: bridge queues and Temporal task queues", rows, "", legend
    )


def depth_history_chart(history: DepthHistory, zone: ZoneInfo | None = None) -> Chart:
    """The queue's depth at each sampled minute, oldest left: a line over a filled area.

    A minute without a sample (no worker running) breaks the line rather than guessing.
    """
    height = 150
    plot_w, plot_h = WIDTH - LEFT - RIGHT, height - TOP - BOTTOM
    slot = plot_w / max(1, len(history.minutes))
    index = {minute: i for i, minute in enumerate(history.minutes)}
    top = nice_max(max((s.depth for s in history.samples), default=0))
    base = TOP + plot_h
    labels = [Label(LEFT - 4, TOP + 8, str(top), "end"), Label(LEFT - 4, base, "0", "end")]
    for i, minute in enumerate(history.minutes):
        if i % 15 == 0:
            labels.append(Label(LEFT + i * slot, height - 5, _clock(minute, zone), "start"))
        elif i == len(history.minutes) - 1:
            labels.append(Label(LEFT + plot_w, height - 5, _clock(minute, zone), "end"))
    dots: list[Dot] = []
    runs: list[list[Dot]] = []
    previous = -2
    for sample in history.samples:
        at = index.get(sample.minute)
        if at is None:
            continue
        clock = _clock(sample.minute, zone)
        dot = Dot(
            LEFT + (at + 0.5) * slot, base - sample.depth / top * plot_h, "depth-dot",
            f"{clock}: depth {sample.depth} (waiting {sample.waiting + sample.paused}, "
            f"delayed {sample.delayed}, prioritized {sample.prioritized}, active {sample.active})",
            {"minute": clock, "depth": str(sample.depth), "waiting": str(sample.waiting + sample.paused),
             "delayed": str(sample.delayed), "prioritized": str(sample.prioritized),
             "active": str(sample.active)},
        )  # fmt: skip
        dots.append(dot)
        if at != previous + 1:
            runs.append([])
        runs[-1].append(dot)
        previous = at
    paths: list[Path] = []
    for run in runs:
        line = " L ".join(f"{d.x:.1f} {d.y:.1f}" for d in run)
        paths.append(
            Path(f"M {run[0].x:.1f} {base} L {line} L {run[-1].x:.1f} {base} Z", "depth-area")
        )
        paths.append(Path(f"M {line}", "depth-line"))
    if not dots:
        labels.append(
            Label(
                LEFT + plot_w / 2,
                TOP + plot_h / 2,
                "no samples yet (a worker records one a minute)",
            )
        )
    latest = history.samples[-1].depth if history.samples else 0
    return Chart(
        id=f"depth-history-{history.queue}",
        title=f"{history.queue}: queue depth, last {len(history.minutes)} minutes",
        width=WIDTH,
        height=height,
        rects=[],
        labels=labels,
        legend=[("depth-area", "waiting + delayed + prioritized + active, sampled each minute")],
        data={"queue": history.queue, "samples": str(len(dots)), "latest": str(latest)},
        paths=paths,
        dots=dots,
    )


def status_css(status: str) -> str:
    """A fill class per known status (s0, s1, ...); any other status shares one."""
    rank, other = _status_rank(status)
    return "s-other" if other else f"s{rank}"


def _status_rank(status: str) -> tuple[int, str]:
    known = [s.value for s in STATUS_ORDER]
    return (known.index(status), "") if status in known else (len(known), status)


def orders_today(
    engine: Engine, zone: ZoneInfo, now: datetime | None = None
) -> dict[int, dict[str, int]]:
    """Orders created in each hour of today (in `zone`), by their status now."""
    now = now or datetime.now(zone)
    start = datetime.combine(now.astimezone(zone).date(), time.min, tzinfo=zone)
    with Session(engine) as session:
        rows = session.exec(
            select(Order.created_at, Order.status).where(
                col(Order.created_at) >= start.astimezone(UTC),
                col(Order.created_at) < (start + timedelta(days=1)).astimezone(UTC),
            )
        ).all()
    by_hour: dict[int, dict[str, int]] = {}
    for created, status in rows:
        stamp = created if created.tzinfo else created.replace(tzinfo=UTC)  # SQLite keeps no zone
        hour = by_hour.setdefault(stamp.astimezone(zone).hour, {})
        hour[status] = hour.get(status, 0) + 1
    return by_hour


def orders_chart(by_hour: dict[int, dict[str, int]], zone: ZoneInfo) -> Chart:
    """Today's orders per hour of creation, stacked by their status now."""
    height = 170
    plot_w, plot_h = WIDTH - LEFT - RIGHT, height - TOP - BOTTOM
    slot = plot_w / 24
    statuses = sorted({s for hour in by_hour.values() for s in hour}, key=_status_rank)
    top = nice_max(max((sum(h.values()) for h in by_hour.values()), default=0))
    rects: list[Rect] = []
    labels = [Label(LEFT - 4, TOP + 8, str(top), "end"), Label(LEFT - 4, TOP + plot_h, "0", "end")]
    for hour in range(24):
        x = LEFT + hour * slot + slot * (1 - BAR_FILL) / 2
        y = float(TOP + plot_h)
        for status in statuses:
            n = by_hour.get(hour, {}).get(status, 0)
            if not n:
                continue
            h = n / top * plot_h
            y -= h
            rects.append(
                Rect(x, y, slot * BAR_FILL, h, status_css(status), f"{hour:02d}:00: {n} {status}",
                     {"hour": f"{hour:02d}", "status": status, "count": str(n)})
            )  # fmt: skip
        if hour % 3 == 0:
            labels.append(Label(x + slot * BAR_FILL / 2, height - 5, f"{hour:02d}"))
    total = sum(sum(h.values()) for h in by_hour.values())
    return Chart(
        id="orders-today",
        title=f"Orders created today ({zone.key}), by hour and their status now: {total}",
        width=WIDTH,
        height=height,
        rects=rects,
        labels=labels,
        legend=[(status_css(s), s) for s in statuses],
        data={"total": str(total)},
    )
