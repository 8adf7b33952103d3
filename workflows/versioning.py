"""How each workflow type moves between builds of the workers (Worker Deployment Versioning).

PINNED: a run ends on the build it started on, whatever is deployed meanwhile; its build keeps
running until it has drained (`orderflow deploy drained`), and a change to it needs no patch.
AUTO_UPGRADE: a run's next task goes to the current build, so a change to it is patched as
before (docs/VERSIONING.md), and no build waits for it to drain.

The table is read by the versioned workers (workers/versioning.py) instead of being written on
each `@workflow.defn(versioning_behavior=...)`: the server refuses a workflow task that names a
behavior when it comes from an unversioned worker ("versioning behavior cannot be specified
without deployment options being set with versioned mode", Server 1.32), and the workers run
unversioned unless a build id is set (ORDERFLOW_BUILD_ID). Keys are workflow type names, as in
the histories; tests/test_versioning.py checks that every served type has one.
"""

from __future__ import annotations

from temporalio.common import VersioningBehavior

PINNED = VersioningBehavior.PINNED
AUTO_UPGRADE = VersioningBehavior.AUTO_UPGRADE

VERSIONING_BEHAVIORS: dict[str, VersioningBehavior] = {
    # an order waits an hour for its payment, days for a review or its shipment
    "OrderWorkflow": PINNED,
    # capture retries an hour apart; started by a pinned order, with its payment
    "PaymentRetryWorkflow": PINNED,
    # waits days for a person's decision
    "ManualReviewWorkflow": PINNED,
    # a pinned order's child, given the order's input and done in seconds: pinned, it costs no
    # drain time and never runs another build's code than its order's
    "InventoryReleaseWorkflow": PINNED,
    # started by a schedule, one activity, no state and no order's data: a run that spans a
    # deploy finishes on the current build, and an old build never waits for these
    "DailyReportWorkflow": AUTO_UPGRADE,
    "QueueCleanupWorkflow": AUTO_UPGRADE,
    "PaymentReconciliationWorkflow": AUTO_UPGRADE,
    "StockSyncWorkflow": AUTO_UPGRADE,
}
# a type missing above runs pinned (the versioned workers' default), the safe side
DEFAULT_BEHAVIOR = PINNED
