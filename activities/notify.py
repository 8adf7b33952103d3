"""The one notification activity: every customer mail about an order goes through here."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from bridge.errors import PayloadRejectedError
from orderflow.contracts.mail import EMAIL_QUEUE, EmailJob
from orderflow.contracts.order import NotificationKind, NotifyInput, NotifyResult
from orderflow.db import Invoice, Order, OrderItem, reader, table
from orderflow.money import to_major

# Core reads: cheaper per mail than the ORM's identity map
ORDERS = table(Order)
ORDER_ITEMS = table(OrderItem)
INVOICES = table(Invoice)

MAIL_REFUSED = "MailRefused"  # the ApplicationError type of a mail the email queue refused
# email-queue job name and subject per notification (job names as in the seed)
JOBS: dict[NotificationKind, tuple[EmailJob, str]] = {
    NotificationKind.CONFIRMATION: (EmailJob.ORDER_CONFIRMATION, "Order Confirmed"),
    NotificationKind.CANCELLATION: (EmailJob.ORDER_CANCELLED, "Order Cancelled"),
    NotificationKind.SHIPPING: (EmailJob.SHIPPING_NOTIFICATION, "Your Order Has Shipped"),
}


class JobQueue(Protocol):
    """What the activity needs of a queue producer (BullMQ's `add`)."""

    async def add(self, name: str, data: dict[str, Any], opts: dict[str, Any] | None = None) -> str:
        """Add a job; a repeated jobId adds nothing.

        Args:
            name: The email job name (an `EmailJob`).
            data: The job's data, plain JSON.
            opts: BullMQ job options; the activity passes a jobId made from the notification.

        Returns:
            The job's id.

        Raises:
            Exception: Whatever the queue raises fails the activity, and Temporal retries it.
        """
        ...


class NotificationActivities:
    """Builds the mail job from the database and enqueues it on the email queue."""

    def __init__(self, engine: Engine, email_queue: JobQueue) -> None:
        self.engine = engine
        self.reads = reader(engine)  # read-only transactions: on SQLite they take no write lock
        self.email_queue = email_queue

    @activity.defn
    async def notify(self, data: NotifyInput) -> NotifyResult:
        """Enqueue one mail with a deterministic job id, so a retried activity never mails twice."""
        job_name, subject = JOBS[data.kind]
        # the database read runs off the event loop, which also runs every workflow activation
        job_data = await asyncio.to_thread(self._job_data, data, subject)
        # no ":" in the id: Node BullMQ refuses it in custom job ids
        job_id = f"{data.kind.value}-{data.order_id}"
        try:
            await self.email_queue.add(job_name, job_data, {"jobId": job_id})
        except PayloadRejectedError as err:
            # the same data is refused on every attempt: a failure of this mail, not the order's
            activity.logger.warning("order %s: %s mail refused: %s", data.order_id, data.kind, err)
            raise ApplicationError(
                f"order {data.order_id}: the {data.kind} mail was refused by the email queue: "
                f"{err.reason}",
                type=MAIL_REFUSED,
                non_retryable=True,
            ) from err
        return NotifyResult(job_id=job_id, channel=EMAIL_QUEUE)

    def _job_data(self, data: NotifyInput, subject: str) -> dict[str, Any]:
        with self.reads.connect() as conn:
            order = conn.execute(
                select(ORDERS.c.id, ORDERS.c.email, ORDERS.c.total, ORDERS.c.currency).where(
                    ORDERS.c.id == data.order_id
                )
            ).first()
            if order is None:
                raise ApplicationError(
                    f"cannot notify: order {data.order_id!r} is not in the database",
                    non_retryable=True,
                )
            items = conn.execute(
                select(ORDER_ITEMS.c.sku, ORDER_ITEMS.c.quantity, ORDER_ITEMS.c.unit_price).where(
                    ORDER_ITEMS.c.order_id == order.id
                )
            ).all()
            invoice = conn.execute(
                select(INVOICES.c.number).where(INVOICES.c.order_id == order.id)
            ).scalar_one_or_none()
            return {
                "to": order.email,
                "subject": f"{subject} — {order.id}",
                "template": JOBS[data.kind][0],
                "data": {
                    "orderNumber": order.id,
                    # exact decimal strings in major units for Node consumers (the seed's
                    # shape), and the integer minor units beside them
                    "items": [
                        {
                            "sku": i.sku,
                            "quantity": i.quantity,
                            "unitPrice": str(to_major(i.unit_price, order.currency)),
                            "unitPriceMinor": i.unit_price,
                        }
                        for i in items
                    ],
                    "total": str(to_major(order.total, order.currency)),
                    "totalMinor": order.total,
                    "currency": order.currency,
                    "invoiceNumber": invoice,
                    "note": data.note,
                    **(
                        {"carrier": data.carrier, "trackingNumber": data.tracking_number}
                        if data.carrier or data.tracking_number
                        else {}
                    ),
                },
            }
