"""The recorders' tools (tests/histories/record.py, record_prepatch.py); not a test module.

- `save` writes a finished workflow's history as a golden, never over an existing one.
- `before_patches` runs the workflow code as it was before some patches: while it is on,
  `workflow.patched(id)` answers False for those ids and records no marker, in every worker of
  this process (the workflow modules call `workflow.patched` on the `temporalio.workflow`
  module at run time, in the sandbox or not). The history then has no marker for them, and a
  replay takes the branch before each, as an order started before the patch does.
- `CaptureGate` holds the session gateway's captures (sync activities, in worker threads)
  until the recorder lets them go: a capture "at the gateway" while the order hears of a
  payment.
- `orders_worker` is an orders worker of the recorder's own task queue (the real activities),
  in the SDK's single-batch mode: stopped, it lets two events reach an order's history while
  nobody serves it, so the next one gets them in one workflow task (tests/unit/
  test_holds_and_races.py does the same with stubs).
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import temporalio.workflow
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.worker import Worker
from temporalio.worker._workflow_instance import _WorkflowLogicFlag

from app.client import OrderClient
from orderflow.contracts.order import ORDERS_TASK_QUEUE, PaymentReceived, Shipment
from orderflow.contracts.payment import GatewayRequest, GatewayResponse
from orderflow.settings import Settings
from tests.helpers import eventually, wait_status
from workers.temporal import Dependencies, build_workers

HERE = Path(__file__).resolve().parent
# a release whose payloads changed records its own set beside the older ones, e.g.
# ORDERFLOW_RECORD_RELEASE=minor-units writes minor-units.paid.OrderWorkflow.json; the `codec`
# set was recorded encrypted, under the suite's key (tests/temporal_env.py TEST_CODEC_KEY, which
# every server the suite starts gets): -k "sqlite and (test_paid or ...)", see REQUIRED. Every
# recording is encrypted since: record with ORDERFLOW_RECORD_RELEASE=codec.
RELEASE = (
    f"{os.environ['ORDERFLOW_RECORD_RELEASE']}."
    if os.environ.get("ORDERFLOW_RECORD_RELEASE")
    else ""
)


async def save(client: Client, path: str, *workflow_ids: str) -> None:
    """Write the history of each (closed) workflow as <path>.<WorkflowType>.json.

    A workflow that failed or was cancelled (a retry the order cancelled) is saved as it closed.
    """
    for workflow_id in workflow_ids:
        handle = client.get_workflow_handle(workflow_id)
        try:
            await handle.result()
        except WorkflowFailureError:
            pass  # closed all the same: its history is whole
        kind = (await handle.describe()).workflow_type
        target = HERE / f"{RELEASE}{path}.{kind}.json"
        if target.exists() and not os.environ.get("ORDERFLOW_RECORD_OVERWRITE"):
            print(f"kept {target.name} (a golden history is never overwritten)")
            continue
        history = await handle.fetch_history()
        target.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
        print(f"wrote {target.name}: {len(history.events)} events")


async def pay_and_ship(orders: OrderClient, order_id: str, amount: int) -> None:
    """Pay in full, wait for the confirmation, ship."""
    ack = await orders.payment_received(
        order_id, PaymentReceived(f"pay-{order_id}", amount, currency="INR")
    )
    assert ack.accepted, ack.reason
    await wait_status(orders, order_id, "CONFIRMED")
    await orders.shipped(order_id, Shipment(carrier="BlueDart", tracking_number="BD1"))


def before_patches(monkeypatch: pytest.MonkeyPatch, *patch_ids: str) -> None:
    """Until the test ends, `workflow.patched` answers False for `patch_ids`, with no marker."""
    real = temporalio.workflow.patched
    old = frozenset(patch_ids)

    def patched(patch_id: str, **kwargs: Any) -> bool:
        return False if patch_id in old else real(patch_id, **kwargs)

    monkeypatch.setattr(temporalio.workflow, "patched", patched)


class CaptureGate:
    """Holds every capture at the session's gateway until `open()`; remembers each request."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, deps: Dependencies) -> None:
        self.requests: list[GatewayRequest] = []
        self._open = threading.Event()
        real: Callable[[GatewayRequest], GatewayResponse] = deps.gateway.capture

        def capture(request: GatewayRequest) -> GatewayResponse:
            self.requests.append(request)
            # well inside the activity's 30 s: the recorder opens it within seconds
            if not self._open.wait(timeout=25):
                raise TimeoutError(f"capture {request.idempotency_key} was never let go")
            return real(request)

        monkeypatch.setattr(deps.gateway, "capture", capture)

    async def held(self) -> GatewayRequest:
        """The first capture, once it is at the gateway."""

        async def arrived() -> GatewayRequest | None:
            return self.requests[0] if self.requests else None

        return await eventually(arrived, 20, "a capture at the gateway")

    def open(self) -> None:
        self._open.set()


class OwnOrdersQueue:
    """An OrderClient on a task queue of the recorder's own, and the workers that serve it."""

    def __init__(self, client: Client, settings: Settings, deps: Dependencies) -> None:
        self.suffix = f"-golden-{uuid.uuid4().hex[:8]}"
        self.client, self.settings, self.deps = client, settings, deps
        self.orders = OrderClient(
            client, settings, deps.engine, task_queue=ORDERS_TASK_QUEUE + self.suffix
        )

    def worker(self) -> Worker:
        """A new orders worker (single-batch activations) on this queue; `async with` it."""
        [worker] = build_workers(
            self.client,
            self.settings,
            self.deps,
            task_queue_suffix=self.suffix,
            queues=[ORDERS_TASK_QUEUE],
        )
        # the SDK's own tests switch the mode on this way until it is the default
        worker._set_default_workflow_logic_flag(
            _WorkflowLogicFlag.PROCESS_WORKFLOW_ACTIVATION_JOBS_AS_SINGLE_BATCH, enabled=True
        )
        return worker


async def timer_fired(handle: WorkflowHandle[Any, Any]) -> bool:
    async for event in handle.fetch_history_events():
        if event.HasField("timer_fired_event_attributes"):
            return True
    return False


async def signal_handled(handle: WorkflowHandle[Any, Any], signal: str) -> bool:
    """A workflow task that started after the signal `signal` reached the history completed."""
    signalled = started = False
    async for event in handle.fetch_history_events():
        if event.HasField("workflow_execution_signaled_event_attributes"):
            name = event.workflow_execution_signaled_event_attributes.signal_name
            signalled = signalled or name == signal
        elif signalled and event.HasField("workflow_task_started_event_attributes"):
            started = True
        elif started and event.HasField("workflow_task_completed_event_attributes"):
            return True
    return False
