"""The order's states in one table (issue 19): TRANSITIONS covers every status, and every
golden history moves only along it (the replay in tests/test_replay.py runs the same histories
through OrderWorkflow._set, which refuses a move that is not in the table)."""

from __future__ import annotations

import base64
import itertools
import json
from pathlib import Path

import pytest

from orderflow.contracts.order import (
    FINAL_STATUSES,
    TRANSITIONS,
    OrderStatus,
)

HISTORIES = Path(__file__).parent / "histories"
ORDERS = sorted(HISTORIES.glob("*.OrderWorkflow.json"))


def statuses(golden: Path) -> list[OrderStatus]:
    """The OrderStatus search attribute's values, in the order the workflow set them."""
    seen = [OrderStatus.NEW]
    for event in json.loads(golden.read_text())["events"]:
        upsert = event.get("upsertWorkflowSearchAttributesEventAttributes")
        field = upsert and upsert["searchAttributes"]["indexedFields"].get("OrderStatus")
        if field:
            seen.append(OrderStatus(json.loads(base64.b64decode(field["data"]))))
    return seen


def test_every_status_has_its_row_and_every_move_names_a_status() -> None:
    assert set(TRANSITIONS) == set(OrderStatus)
    for moves in TRANSITIONS.values():
        assert moves <= set(OrderStatus)


def test_only_the_ends_and_the_returned_have_nowhere_to_go() -> None:
    dead_ends = {status for status, moves in TRANSITIONS.items() if not moves}
    assert dead_ends == (FINAL_STATUSES - {OrderStatus.SHIPPED}) | {OrderStatus.RETURNED}


def test_every_status_but_new_can_be_reached() -> None:
    reached = set().union(*TRANSITIONS.values())
    assert reached == set(OrderStatus) - {OrderStatus.NEW}


@pytest.mark.parametrize("golden", ORDERS, ids=[path.stem for path in ORDERS])
def test_every_golden_order_moves_along_the_table(golden: Path) -> None:
    walk = statuses(golden)
    assert len(walk) > 2, f"{golden.name}: no status set"
    for before, after in itertools.pairwise(walk):
        assert after in TRANSITIONS[before], f"{golden.name}: {before} → {after} ({walk})"


async def test_a_move_the_table_does_not_allow_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard can fail: without PAID → CONFIRMED the reviewed order's replay stops there."""
    from temporalio.client import WorkflowHistory
    from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

    from workflows.order import OrderWorkflow

    rows = dict(TRANSITIONS)
    rows[OrderStatus.PAID] = rows[OrderStatus.PAID] - {OrderStatus.CONFIRMED}
    monkeypatch.setattr("workflows.order.TRANSITIONS", rows)
    golden = HISTORIES / "reviewed.OrderWorkflow.json"
    history = WorkflowHistory.from_json(golden.stem, golden.read_text())
    replayer = Replayer(workflows=[OrderWorkflow], workflow_runner=UnsandboxedWorkflowRunner())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None
    assert "PAID → CONFIRMED is not in TRANSITIONS" in str(result.replay_failure)
