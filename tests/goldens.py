"""What tests/test_replay.py needs to judge the golden histories: the workflow types and patch ids
the code has (found by import, never a hand list), the answers `workflow.patched` gave while a
golden replayed, and a replay failure told with the file and the first mismatching command.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import logging
import pkgutil
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import temporalio.workflow
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHistory

import workflows

# workflow.patched(id), and OrderCore._patched(id), which asks it (workflows/order_core.py)
PATCH_CALLS = {"patched", "_patched"}


def workflow_modules() -> list[ModuleType]:
    """Every module of the workflows package, imported."""
    return [
        importlib.import_module(f"{workflows.__name__}.{info.name}")
        for info in pkgutil.iter_modules(workflows.__path__)
    ]


def workflow_classes() -> dict[str, type]:
    """Every `@workflow.defn` class defined in workflows/, by its workflow type name."""
    found: dict[str, type] = {}
    for module in workflow_modules():
        for value in vars(module).values():
            if not isinstance(value, type) or value.__module__ != module.__name__:
                continue
            defn = temporalio.workflow._Definition.from_class(value)
            if defn is not None and defn.name:
                found[defn.name] = value
    return dict(sorted(found.items()))


class _PatchCalls(ast.NodeVisitor):
    """The patch ids one module asks, each resolved to its value; where it asks them first."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.params: list[set[str]] = [set()]
        self.found: dict[str, str] = {}

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.params.append({a.arg for a in [*node.args.args, *node.args.kwonlyargs]})
        self.generic_visit(node)
        self.params.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in PATCH_CALLS and node.args:
            arg, where = node.args[0], f"{self.module.__name__}:{node.lineno}"
            if isinstance(arg, ast.Name) and arg.id in self.params[-1]:
                pass  # a helper passing its caller's id on (OrderCore._patched)
            else:
                value = (
                    arg.value
                    if isinstance(arg, ast.Constant)
                    else getattr(self.module, arg.id, None)
                    if isinstance(arg, ast.Name)
                    else None
                )
                if not isinstance(value, str):
                    raise AssertionError(
                        f"{where}: a patch id that is not a str constant: {ast.unparse(arg)}"
                    )
                self.found.setdefault(value, where)
        self.generic_visit(node)


def patch_ids_in_code() -> dict[str, str]:
    """Every id a workflow in workflows/ asks `workflow.patched` (or `self._patched`), with the
    place it is asked first ("workflows.order:96"). `deprecate_patch` ids are not asked."""
    found: dict[str, str] = {}
    for module in workflow_modules():
        calls = _PatchCalls(module)
        calls.visit(ast.parse(Path(inspect.getfile(module)).read_text()))
        for patch_id, where in calls.found.items():
            found.setdefault(patch_id, where)
    return dict(sorted(found.items()))


@contextmanager
def patched_answers(workflow_id: str) -> Iterator[set[tuple[str, bool]]]:
    """(patch id, answer) of every `workflow.patched` call the workflow `workflow_id` makes
    while replaying, inside the block. Only a call the history answers counts: the spy ignores
    any other workflow this process runs meanwhile (a session worker's)."""
    answers: set[tuple[str, bool]] = set()
    real = temporalio.workflow.patched

    def spy(patch_id: str, **kwargs: Any) -> bool:
        answer = real(patch_id, **kwargs)
        if (
            temporalio.workflow.unsafe.is_replaying()
            and temporalio.workflow.info().workflow_id == workflow_id
        ):
            answers.add((patch_id, answer))
        return answer

    temporalio.workflow.patched = spy  # type: ignore[assignment]
    try:
        yield answers
    finally:
        temporalio.workflow.patched = real


@contextmanager
def patch_always_on(patch_id: str, workflow_id: str) -> Iterator[None]:
    """Inside the block `workflow.patched(patch_id)` answers True and records no marker in the
    workflow `workflow_id` while it replays: the code as if the change had shipped without its
    guard. Any other workflow this process runs meanwhile gets the real answer."""
    real = temporalio.workflow.patched

    def unguarded(asked: str, **kwargs: Any) -> bool:
        if (
            asked == patch_id
            and temporalio.workflow.unsafe.is_replaying()
            and temporalio.workflow.info().workflow_id == workflow_id
        ):
            return True
        return real(asked, **kwargs)

    temporalio.workflow.patched = unguarded  # type: ignore[assignment]
    try:
        yield
    finally:
        temporalio.workflow.patched = real


class _WorkflowErrors(logging.Handler):
    def __init__(self, workflow_id: str) -> None:
        super().__init__(logging.WARNING)
        self.workflow_id = workflow_id
        self.raised: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if f"with ID {self.workflow_id} " not in record.getMessage() or not record.exc_info:
            return
        error: BaseException | None = record.exc_info[1]
        chain = []
        while error is not None and len(chain) < 4:
            chain.append(f"{type(error).__name__}: {error}"[:300])
            error = error.__cause__ or error.__context__
        self.raised.append(" <- ".join(chain))


@contextmanager
def workflow_errors(workflow_id: str) -> Iterator[list[str]]:
    """What the workflow `workflow_id` raised inside the block, each with its causes.

    A replay that fails on an exception (a payload that no longer decodes, say) reports it to
    the server as a failure, whose text the codec seals; the SDK logs the exception itself.
    """
    handler = _WorkflowErrors(workflow_id)
    log = logging.getLogger("temporalio.worker._workflow_instance")
    log.addHandler(handler)
    try:
        yield handler.raised
    finally:
        log.removeHandler(handler)


def _payload_json(payloads: Any) -> Any:
    """The first payload of a marker's detail, decoded (core's own details are plain JSON)."""
    try:
        return json.loads(payloads.payloads[0].data)
    except (IndexError, ValueError):
        return None


def describe_event(event: HistoryEvent) -> str:
    """One event of a golden as a reader names the command: "event 27: activity ship_reservation"."""
    kind = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_").lower()
    what = kind
    if event.HasField("marker_recorded_event_attributes"):
        marker = event.marker_recorded_event_attributes
        if marker.marker_name == "core_local_activity":
            data = _payload_json(marker.details["data"]) or {}
            what = f"local activity {data.get('activity_type')} (seq {data.get('seq')})"
        elif marker.marker_name == "core_patch":
            data = _payload_json(marker.details["patch-data"]) or {}
            what = f"patch marker {data.get('id')}"
        else:
            what = f"marker {marker.marker_name}"
    elif event.HasField("activity_task_scheduled_event_attributes"):
        scheduled = event.activity_task_scheduled_event_attributes
        what = f"activity {scheduled.activity_type.name} (seq {scheduled.activity_id})"
    elif event.HasField("start_child_workflow_execution_initiated_event_attributes"):
        child = event.start_child_workflow_execution_initiated_event_attributes
        what = f"child {child.workflow_type.name} {child.workflow_id}"
    elif "timer" in kind:
        timer_id = getattr(event, f"{kind}_event_attributes").timer_id
        what = f"{kind} (timer {timer_id})"
    return f"event {event.event_id}: {what}"


def _golden_event(history: WorkflowHistory, sdk_text: str) -> str:
    """The golden's event the SDK's text points at, named ("" when it names none)."""
    if found := re.search(r"HistoryEvent\(id: (\d+)", sdk_text):
        wanted = int(found.group(1))
        return next((describe_event(e) for e in history.events if e.event_id == wanted), "")
    if found := re.search(r"patch marker encountered for change ([^,\s]+)", sdk_text):
        marker = f"patch marker {found.group(1)}"
        return next((n for e in history.events if (n := describe_event(e)).endswith(marker)), "")
    if found := re.search(r"\b(LocalActivity|Activity)\((\d+)\)", sdk_text):
        seq = f"(seq {found.group(2)})"
        local = found.group(1) == "LocalActivity"
        for event in history.events:
            named = describe_event(event)
            if named.endswith(seq) and (" local activity " in named) == local:
                return named
    return ""


def replay_failure_message(
    golden: Path, history: WorkflowHistory, failure: Exception, raised: Sequence[str] = ()
) -> str:
    """Why a golden no longer replays: its file, the SDK's first mismatch (or what the workflow
    raised), where that is in the golden, then the SDK's whole text."""
    text = str(failure)
    found = re.search(r"\[TMPRL1100\][^\"]*", text)
    mismatch = found.group(0) if found else f"{type(failure).__name__}: {text[:300]}"
    lines = [f"{golden.name} no longer replays against the current code", f"  {mismatch}"]
    if at := _golden_event(history, mismatch):
        lines.append(f"  the golden has there: {at}")
    lines.extend(f"  the workflow raised {error}" for error in raised)
    lines.append(f"  (the SDK's text: {text[:1500]})")
    return "\n".join(lines)


def recorded_patch_ids(history: WorkflowHistory) -> set[str]:
    """The `workflow.patched` ids a history recorded (its core_patch markers)."""
    found = set()
    for event in history.events:
        marker = event.marker_recorded_event_attributes
        if (
            event.HasField("marker_recorded_event_attributes")
            and marker.marker_name == "core_patch"
        ):
            found.add(json.loads(marker.details["patch-data"].payloads[0].data)["id"])
    return found
