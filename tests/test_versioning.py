"""Worker Deployment Versioning on a real dev server: a deploy that strands no order.

v1 workers take orders that wait for their payment; v2 workers, whose OrderWorkflow issues an
extra activity before it asks for the payment (so v1's histories cannot replay on it), are
promoted.
The old orders are paid and end on v1 with v1's commands, new orders run v2's, and v1 reports
drained once its orders have ended; no workflow task fails on the way. `orderflow deploy …`
drives the promotions and the drainage checks, as an operator would.

The server is this module's own: drainage is counted every few minutes by default, and the
dynamic config below makes it a second, so the test waits on conditions, not on the clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.common import VersioningBehavior
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities.order import OrderActivities
from app.client import OrderClient
from app.deployments import drainage, polled_task_queues
from orderflow.contracts.deployment import DeploymentError
from orderflow.contracts.order import ORDERS_TASK_QUEUE, OrderInput, OrderResult, PaymentReceived
from orderflow.contracts.reports import DailyReportInput
from orderflow.db import Product, make_engine
from orderflow.schema import upgrade
from orderflow.settings import Settings
from tests import temporal_env
from tests.helpers import eventually, pending_order, wait_status
from workers.temporal import (
    TASK_QUEUES,
    Dependencies,
    QueueWork,
    build_workers,
    deployment_config,
    queue_work,
    workflow_runner,
)
from workers.versioning import VersionedWorkflowRunner
from workflows.order import OrderWorkflow
from workflows.reports import DailyReportWorkflow
from workflows.versioning import VERSIONING_BEHAVIORS

_Arg = TypeVar("_Arg")
_Ret = TypeVar("_Ret")
DEPLOYMENT = "orderflow-test"
# drainage counted every second, and trusted a second after visibility says "none open"
DRAINAGE_EVERY_SECOND = [
    "--dynamic-config-value",
    'matching.wv.VersionDrainageStatusRefreshInterval="1s"',
    "--dynamic-config-value",
    'matching.wv.VersionDrainageStatusVisibilityGracePeriod="1s"',
]
PINNED, AUTO_UPGRADE = VersioningBehavior.PINNED.value, VersioningBehavior.AUTO_UPGRADE.value
ORDERFLOW = str(Path(sys.executable).parent / "orderflow")
SCREEN = "screen_order_v2"
screened: list[str] = []  # the orders v2's extra activity saw


@activity.defn(name=SCREEN)
async def screen_order(order_id: str) -> None:
    """v2's new step between the stock check and the payment (a fraud screen, say)."""
    screened.append(order_id)


@workflow.defn(name="OrderWorkflow")
class OrderWorkflowV2(OrderWorkflow):
    """v2 of the order: screens it (an activity) once placed, before asking for the payment.

    Unguarded by a patch, and placed where every v1 order waiting for its payment has already
    gone past: replayed here, such an order's history fails with a nondeterminism error.
    """

    @workflow.run
    async def run(self, order: OrderInput) -> OrderResult:
        """v1's run, with the screen between the stock check and the payment."""
        return await super().run(order)

    async def _act(self, method: Callable[[Any, _Arg], _Ret], arg: _Arg) -> _Ret:
        result = await super()._act(method, arg)
        if method is OrderActivities.place_order:  # as soon as the stock is reserved
            await workflow.execute_activity(
                screen_order, self._order.order_id, start_to_close_timeout=timedelta(seconds=10)
            )
        return result


def v2_work(settings: Settings, deps: Dependencies) -> dict[str, QueueWork]:
    """What v2's workers run: v1's, with OrderWorkflowV2 and its activity on the orders queue."""
    work = queue_work(settings, deps)
    orders = work[ORDERS_TASK_QUEUE]
    work[ORDERS_TASK_QUEUE] = dataclasses.replace(
        orders,
        workflows=[OrderWorkflowV2 if w is OrderWorkflow else w for w in orders.workflows],
        activities=[*orders.activities, screen_order],
    )
    return work


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server of this module's own, counting drainage every second."""
    async with await temporal_env.start_local(dev_server_extra_args=DRAINAGE_EVERY_SECOND) as env:
        yield env


@pytest.fixture(scope="module")
def own_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """A database of this module's own (versioning is no database matter: SQLite only)."""
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('versioning') / 'orderflow.db'}")
    upgrade(engine)
    return engine


def build(settings: Settings, build_id: str) -> Settings:
    return settings.model_copy(update={"deployment_name": DEPLOYMENT, "build_id": build_id})


@asynccontextmanager
async def running(workers: list[Worker]) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield
    finally:
        await asyncio.gather(*(w.shutdown() for w in workers))
        await asyncio.gather(*tasks, return_exceptions=True)


async def orderflow(client: Client, *args: str, deployment: str = DEPLOYMENT) -> tuple[int, str]:
    """`orderflow …` in a process of its own against the server; (exit code, stdout + stderr)."""
    env = os.environ | {
        "ORDERFLOW_TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "ORDERFLOW_TEMPORAL_NAMESPACE": client.namespace,
        "ORDERFLOW_DEPLOYMENT_NAME": deployment,
    }
    proc = await asyncio.create_subprocess_exec(
        ORDERFLOW, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode() + err.decode()


async def promote_once_polling(client: Client, build_id: str) -> dict[str, Any]:
    """Wait until every task queue has a worker of the build, then `orderflow deploy promote`."""

    async def polling() -> bool:
        try:
            return await polled_task_queues(client, DEPLOYMENT, build_id) == sorted(TASK_QUEUES)
        except DeploymentError:  # the version appears with its first poll
            return False

    await eventually(polling, 20, f"build {build_id} polling every task queue")
    code, out = await orderflow(client, "deploy", "promote", build_id, "--json")
    assert code == 0, out
    return dict(json.loads(out))


@dataclass
class Ran:
    """What a run's history says of where and how it ran."""

    builds: set[str]  # the builds that completed its workflow tasks
    behaviors: set[int]  # the versioning behaviors those builds reported
    activities: list[str]  # the types of the activities it scheduled
    events: list[int]  # every event's type


async def history_of(handle: WorkflowHandle[Any, Any]) -> Ran:
    events = (await handle.fetch_history()).events
    tasks = [
        e.workflow_task_completed_event_attributes
        for e in events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    ]
    return Ran(
        builds={t.deployment_version.build_id for t in tasks},
        behaviors={t.versioning_behavior for t in tasks},
        activities=[
            e.activity_task_scheduled_event_attributes.activity_type.name
            for e in events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        ],
        events=[e.event_type for e in events],
    )


async def pay(orders: OrderClient, order_id: str, amount: int) -> None:
    payment = PaymentReceived(payment_id=f"pay-{order_id}", amount=amount, currency="INR")
    ack = await orders.payment_received(order_id, payment)
    assert ack.accepted, ack.reason
    await wait_status(orders, order_id, "CONFIRMED")


def product(engine: Engine) -> str:
    sku = f"lamp-{uuid.uuid4().hex[:6]}"
    with Session(engine) as session:
        session.add(Product(sku=sku, name="lamp", price=12_000, on_hand=10))
        session.commit()
    return sku


async def test_old_orders_end_on_their_build_and_new_ones_run_the_next(
    server: WorkflowEnvironment, settings: Settings, own_engine: Engine, email_queue: Any
) -> None:
    client, v1, v2 = server.client, build(settings, "v1"), build(settings, "v2")
    v1 = v1.model_copy(update={"workflow_sandbox": True})  # each runner sets the behaviors
    deps = Dependencies.from_settings(v1, own_engine, email_queue)
    orders = OrderClient(client, v1, own_engine)
    sku = product(own_engine)
    async with running(build_workers(client, v1, deps)):
        assert (await promote_once_polling(client, "v1"))["previous"] == ""
        await report_runs_auto_upgraded(client, "v1")
        old = [await pending_order(orders, [(sku, 1)]) for _ in range(2)]
        async with running(build_workers(client, v2, deps, work=v2_work(v2, deps))):
            promoted = await promote_once_polling(client, "v2")
            assert (promoted["current"], promoted["previous"]) == ("v2", "v1")
            code, out = await orderflow(client, "deploy", "drained", "v1")
            assert code == 1 and "v1" in out and "has not drained" in out, out

            for order in old:  # paid after the promotion: v1 ends them with v1's commands
                await pay(orders, order.id, order.state.total)
            new = await pending_order(orders, [(sku, 1)])
            await pay(orders, new.id, new.state.total)
            assert screened == [new.id]
            await report_runs_auto_upgraded(client, "v2")
            for order in old:
                await orders.shipped(order.id)
                assert (await order.handle.result()).status == "SHIPPED"

            async def drained() -> bool:
                return (await drainage(client, DEPLOYMENT, "v1")).drained

            await eventually(drained, 30, "v1 drained once its orders ended")
            code, out = await orderflow(client, "deploy", "drained", "v1", "--json")
            assert code == 0 and json.loads(out)["open_pinned"] == 0, out
            await check_histories(old, new)
    code, out = await orderflow(client, "deploy", "status", "--json")
    assert code == 0, out
    (state,) = json.loads(out)["deployments"]
    assert (state["name"], state["current"], state["ramping"]) == (DEPLOYMENT, "v2", "")
    assert {v["build_id"]: v["status"] for v in state["versions"]} == {
        "v2": "current",
        "v1": "drained",
    }


async def check_histories(old: list[Any], new: Any) -> None:
    """Each order ran on one build only, pinned, with that build's commands; no task failed."""
    for order in old:
        ran = await history_of(order.handle)
        assert (ran.builds, ran.behaviors) == ({"v1"}, {PINNED}), order.id
        assert SCREEN not in ran.activities
        assert EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED not in ran.events, order.id
    ran = await history_of(new.handle)
    assert (ran.builds, ran.behaviors) == ({"v2"}, {PINNED}), new.id
    assert ran.activities.count(SCREEN) == 1
    assert EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED not in ran.events


async def report_runs_auto_upgraded(client: Client, build_id: str) -> None:
    """A scheduled workflow's run (the daily report) on the current build, auto-upgrading."""
    handle = await client.start_workflow(
        DailyReportWorkflow.run,
        DailyReportInput(timezone="UTC"),
        id=f"report-{uuid.uuid4().hex[:8]}",
        task_queue=ORDERS_TASK_QUEUE,
    )
    await handle.result()
    ran = await history_of(handle)
    assert (ran.builds, ran.behaviors) == ({build_id}, {AUTO_UPGRADE})


def test_every_workflow_served_is_pinned_or_auto_upgraded_by_name(own_engine: Engine) -> None:
    deps = Dependencies.from_settings(Settings(), own_engine, email_queue=None)  # type: ignore[arg-type]
    served = {w.__name__ for work in queue_work(Settings(), deps).values() for w in work.workflows}
    assert set(VERSIONING_BEHAVIORS) == served
    pinned = {n for n, b in VERSIONING_BEHAVIORS.items() if b is VersioningBehavior.PINNED}
    assert pinned == {
        "OrderWorkflow",
        "PaymentRetryWorkflow",
        "ManualReviewWorkflow",
        "InventoryReleaseWorkflow",
    }
    assert {b for n, b in VERSIONING_BEHAVIORS.items() if n not in pinned} == {
        VersioningBehavior.AUTO_UPGRADE
    }
    # on the class, a behavior would be reported by unversioned workers too, and refused
    assert not any(
        workflow._Definition.must_from_class(w).versioning_behavior
        for work in queue_work(Settings(), deps).values()
        for w in work.workflows
    )


def test_workers_are_versioned_only_with_a_build_id() -> None:
    assert deployment_config(Settings()) is None
    assert isinstance(workflow_runner(Settings()), UnsandboxedWorkflowRunner)
    config = deployment_config(Settings(build_id="3f9c2ab", deployment_name="shop"))
    assert config is not None and config.use_worker_versioning
    assert (config.version.deployment_name, config.version.build_id) == ("shop", "3f9c2ab")
    assert config.default_versioning_behavior is VersioningBehavior.PINNED
    assert isinstance(workflow_runner(Settings(build_id="b")), VersionedWorkflowRunner)


async def test_the_sandbox_of_a_versioned_worker_takes_the_versioned_runner() -> None:
    runner = workflow_runner(Settings(build_id="b", workflow_sandbox=True))
    assert isinstance(runner, SandboxedWorkflowRunner)
    assert runner.runner_class is VersionedWorkflowRunner
    runner.prepare_workflow(workflow._Definition.must_from_class(OrderWorkflow))  # re-imports it


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("build_id", "v1 beta"),
        ("build_id", "-x"),
        ("build_id", "a" * 129),
        ("deployment_name", "a.b"),
    ],
)
def test_a_malformed_build_id_or_deployment_name_is_refused_unechoed(
    field: str, value: str
) -> None:
    with pytest.raises(ValueError, match=f"ORDERFLOW_{field.upper()}") as caught:
        Settings(**{field: value})
    assert value not in str(caught.value)
