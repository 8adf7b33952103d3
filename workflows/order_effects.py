"""OrderWorkflow's side effects that never hold an order: the ERP sync and the customer's mail."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.order_core import DB_TIMEOUT, OrderCore

with workflow.unsafe.imports_passed_through():
    from activities.notify import NotificationActivities
    from activities.order import OrderActivities
    from orderflow.contracts.order import NotificationKind, NotifyInput, Shipment

# a mail is retried for about a minute and a half (a Redis failover), then given up and noted:
# no mail may hold an order. Each interval stays under the local-retry threshold (1 min), so
# retries add no timer commands
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=8,
)


class OrderEffects(OrderCore):
    """The ERP sync and the mails; a failure of either is noted in the history, nothing more."""

    async def _sync_erp(self) -> None:
        try:
            await workflow.execute_local_activity_method(
                OrderActivities.sync_erp,
                self._order.order_id,
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=RetryPolicy(maximum_attempts=self._order.policy.erp_attempts),
            )
        except (ActivityError, ApplicationError) as err:  # a local activity raises the latter
            # the order stands; the failed sync is visible in the history for an operator
            cause = err.cause if isinstance(err, ActivityError) else err
            self._note(f"ERP sync failed after {self._order.policy.erp_attempts} attempts: {cause}")

    async def _notify(
        self, kind: NotificationKind, note: str = "", *, shipment: Shipment | None = None
    ) -> None:
        """Send one mail; one that cannot be sent is noted in the history, never the order's end.

        `note` is free text (screened by the email queue's guard); a shipment's carrier and
        tracking number are generated data and go in fields of their own.
        """
        try:
            await workflow.execute_local_activity_method(
                NotificationActivities.notify,
                NotifyInput(
                    order_id=self._order.order_id,
                    kind=kind,
                    note=note,
                    carrier=shipment.carrier if shipment else "",
                    tracking_number=shipment.tracking_number if shipment else "",
                ),
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=NOTIFY_RETRY,
            )
        except (ActivityError, ApplicationError) as err:  # a local activity raises the latter
            cause = err.cause if isinstance(err, ActivityError) and err.cause else err
            workflow.logger.warning(
                "order %s: %s mail not sent: %s", self._order.order_id, kind, cause
            )
            self._note(f"{kind.name.lower()} mail not sent: {cause}")
