"""The Temporal workers: one per task queue, with the seed's concurrency, built from their dependencies."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.common import WorkerDeploymentVersion
from temporalio.worker import (
    UnsandboxedWorkflowRunner,
    Worker,
    WorkerDeploymentConfig,
    WorkflowRunner,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities.cleanup import CleanupActivities
from activities.erp import Erp, make_erp
from activities.inventory import InventoryActivities
from activities.notify import JobQueue, NotificationActivities
from activities.order import OrderActivities
from activities.payment import PaymentActivities
from activities.reconciliation import ReconciliationActivities
from activities.reports import ReportActivities
from activities.review import ReviewActivities
from activities.stock_sync import StockSyncActivities
from orderflow.contracts.inventory import INVENTORY_TASK_QUEUE
from orderflow.contracts.order import ORDERS_TASK_QUEUE
from orderflow.contracts.payment import PAYMENTS_TASK_QUEUE
from orderflow.contracts.review import REVIEWS_TASK_QUEUE
from orderflow.settings import Settings
from payments.gateway import PaymentGateway, make_gateway
from workers.queues import WEBHOOK, queue_specs
from workers.versioning import VersionedWorkflowRunner
from workflows.cleanup import QueueCleanupWorkflow
from workflows.inventory import InventoryReleaseWorkflow
from workflows.order import OrderWorkflow
from workflows.payment import PaymentRetryWorkflow
from workflows.reconciliation import PaymentReconciliationWorkflow
from workflows.reports import DailyReportWorkflow
from workflows.review import ManualReviewWorkflow
from workflows.stock_sync import StockSyncWorkflow
from workflows.versioning import DEFAULT_BEHAVIOR

# every task queue build_workers serves, in the order operators read them
TASK_QUEUES = (ORDERS_TASK_QUEUE, PAYMENTS_TASK_QUEUE, INVENTORY_TASK_QUEUE, REVIEWS_TASK_QUEUE)


@dataclass
class Dependencies:
    """What the activities need; the outside systems (gateway, ERP) can be swapped here."""

    engine: Engine
    email_queue: JobQueue
    gateway: PaymentGateway
    erp: Erp

    @classmethod
    def from_settings(
        cls, settings: Settings, engine: Engine, email_queue: JobQueue
    ) -> Dependencies:
        """The configured gateway (simulated by default) and ERP (local stand-in unless a URL is set)."""
        return cls(
            engine=engine,
            email_queue=email_queue,
            gateway=make_gateway(settings, engine),
            erp=make_erp(settings.erp_url, engine),
        )


def workflow_runner(settings: Settings) -> WorkflowRunner:
    """Temporal's sandbox if `workflow_sandbox` is set, else workflow code runs as it is.

    The sandbox re-imports the workflow's module for every run and wraps every activation
    (bench/README.md: a quarter of the orders worker's CPU per order).
    Every other module is already passed through; the unit tier (tests/unit) and the replay test
    run the workflows in the default sandbox, which catches non-deterministic calls there.
    With a build id, runs get their type's versioning behavior (workers/versioning.py).
    """
    if settings.worker_versioning:
        if settings.workflow_sandbox:
            return SandboxedWorkflowRunner(runner_class=VersionedWorkflowRunner)
        return VersionedWorkflowRunner()
    return SandboxedWorkflowRunner() if settings.workflow_sandbox else UnsandboxedWorkflowRunner()


def deployment_config(settings: Settings) -> WorkerDeploymentConfig | None:
    """The Worker Deployment Version the workers poll as, or None (unversioned: no build id).

    Each run's behavior comes from `workflows/versioning.py` (VersionedWorkflowRunner); a type
    missing there runs pinned, the default given here.
    """
    if not settings.worker_versioning:
        return None
    return WorkerDeploymentConfig(
        version=WorkerDeploymentVersion(settings.deployment_name, settings.build_id),
        use_worker_versioning=True,
        default_versioning_behavior=DEFAULT_BEHAVIOR,
    )


@dataclass(frozen=True)
class QueueWork:
    """What one task queue's worker runs, and how many activities of it at once."""

    concurrency: int
    workflows: list[type]
    activities: list[Callable[..., Any]]


def queue_work(settings: Settings, deps: Dependencies) -> dict[str, QueueWork]:
    """The workflows and activities each task queue serves, the activities built from `deps`."""
    orders = OrderActivities(deps.engine, deps.erp, currency=settings.currency)
    notify = NotificationActivities(deps.engine, deps.email_queue)
    reports = ReportActivities(deps.engine, currency=settings.currency)
    cleanup = CleanupActivities(queue_specs(settings), settings.redis_url)
    reconciliation = ReconciliationActivities(WEBHOOK.spec(settings), settings.redis_url)
    payments = PaymentActivities(deps.engine, deps.gateway)
    inventory = InventoryActivities(deps.engine)
    stock_sync = StockSyncActivities(deps.engine, deps.erp)
    reviews = ReviewActivities(deps.engine)
    return {
        ORDERS_TASK_QUEUE: QueueWork(
            settings.orders_concurrency,
            [
                OrderWorkflow,
                DailyReportWorkflow,
                QueueCleanupWorkflow,
                PaymentReconciliationWorkflow,
            ],
            [
                orders.place_order,
                orders.record_payment,
                orders.record_refused_payment,
                orders.confirm_order,
                orders.set_status,
                orders.sync_erp,
                notify.notify,
                reports.daily_report,
                cleanup.clean_queues,
                reconciliation.request_reconciliation,
            ],
        ),
        PAYMENTS_TASK_QUEUE: QueueWork(
            settings.payments_concurrency,
            [PaymentRetryWorkflow],
            [payments.call_gateway, payments.release, payments.hold_status],
        ),
        INVENTORY_TASK_QUEUE: QueueWork(
            settings.inventory_concurrency,
            [InventoryReleaseWorkflow, StockSyncWorkflow],
            [inventory.release_reservation, inventory.ship_reservation, stock_sync.sync_stock],
        ),
        REVIEWS_TASK_QUEUE: QueueWork(
            settings.reviews_concurrency,
            [ManualReviewWorkflow],
            [reviews.open_review, reviews.close_review],
        ),
    }


def build_workers(
    client: Client,
    settings: Settings,
    deps: Dependencies,
    *,
    task_queue_suffix: str = "",
    queues: Collection[str] | None = None,
    work: Mapping[str, QueueWork] | None = None,
) -> list[Worker]:
    """The orders, payments, inventory and reviews workers (or just `queues`; suffix for tests).

    `work` replaces `queue_work(settings, deps)` (a test's build with other workflow code).
    With a build id in `settings` every worker polls as that version of the deployment.
    """
    grace = timedelta(seconds=settings.graceful_shutdown_seconds)
    runner = workflow_runner(settings)
    version = deployment_config(settings)
    return [
        Worker(
            client,
            task_queue=queue + task_queue_suffix,
            workflows=served.workflows,
            activities=served.activities,
            workflow_runner=runner,
            max_cached_workflows=settings.max_cached_workflows,
            max_concurrent_activities=served.concurrency,
            # the seed's number holds for both kinds
            max_concurrent_local_activities=served.concurrency,
            activity_executor=ThreadPoolExecutor(
                max_workers=served.concurrency, thread_name_prefix=f"{queue}-activity"
            ),
            graceful_shutdown_timeout=grace,
            deployment_config=version,
        )
        for queue, served in (queue_work(settings, deps) if work is None else work).items()
        if queues is None or queue in queues
    ]
