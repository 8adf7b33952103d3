"""The mail domain's contract: the email queue, its job names (as Node producers name them)."""

from __future__ import annotations

from enum import StrEnum

EMAIL_QUEUE = "email-queue"  # the seed's queue name, shared with Node producers


class EmailJob(StrEnum):
    """Job names of the email queue (as Node producers name them)."""

    ORDER_CONFIRMATION = "send-order-confirmation"
    SHIPPING_NOTIFICATION = "send-shipping-notification"
    PASSWORD_RESET = "send-password-reset"
    WELCOME = "send-welcome"
    ORDER_CANCELLED = "send-order-cancelled"


class MailDeliveryStatus(StrEnum):
    """A mail's delivery record: claimed by an attempt, then handed to SMTP."""

    SENDING = "SENDING"  # an attempt is in the SMTP conversation (or died in it)
    SENT = "SENT"  # the relay accepted it: no attempt of this job sends it again


# The seed's template name of each email job; data.template may give either name
TEMPLATE_ALIASES: dict[str, str] = {
    "order_confirmation": EmailJob.ORDER_CONFIRMATION,
    "shipping_notification": EmailJob.SHIPPING_NOTIFICATION,
    "password_reset": EmailJob.PASSWORD_RESET,
    "welcome": EmailJob.WELCOME,
    "order_cancelled": EmailJob.ORDER_CANCELLED,
}
