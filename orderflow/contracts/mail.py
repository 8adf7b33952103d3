"""The mail domain's contract: the email queue, its job names (as Node producers name them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

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
    # the message was handed over (DATA) but the relay's answer never came: it may have been
    # sent, so no attempt resends it automatically (UNKNOWN_HOLD_SECONDS, mail/processor.py)
    UNKNOWN = "UNKNOWN"


# The seed's template name of each email job; data.template may give either name
TEMPLATE_ALIASES: dict[str, str] = {
    "order_confirmation": EmailJob.ORDER_CONFIRMATION,
    "shipping_notification": EmailJob.SHIPPING_NOTIFICATION,
    "password_reset": EmailJob.PASSWORD_RESET,
    "welcome": EmailJob.WELCOME,
    "order_cancelled": EmailJob.ORDER_CANCELLED,
}


@dataclass
class EmailJobData:
    """An email job's data as every producer writes it (the seed's `{to, subject, template?, data}`).

    mail/processor.py checks `to` and `subject`; what is inside `data` is checked per template
    (REQUIRED_FIELDS in orderflow/contracts/mail.py, mail/view.py).
    """

    to: str
    """The recipient's address (one line)."""
    subject: str
    """The subject line (one line, not blank)."""
    template: str = ""
    """An EmailJob value or the seed's name for it (TEMPLATE_ALIASES); empty: the job's name."""
    data: dict[str, Any] = field(default_factory=dict)
    """What the template reads: its REQUIRED_FIELDS, items and totals (orderNumber, totalMinor)."""


# The job data each template reads, as producers write it: the seed's Node code and ours name
# some fields differently (the seed: items {sku, name, qty, price}, total/grandTotal in major
# units, no currency; ours: items {sku, quantity, unitPrice, unitPriceMinor}, totalMinor and
# currency beside total). The first name present wins; a field marked required that is absent
# (or null) fails the job as unrecoverable, naming it.
ITEM_QUANTITY = ("quantity", "qty")
ITEM_PRICE_MINOR = ("unitPriceMinor",)  # int minor units of `currency` (ours)
ITEM_PRICE_MAJOR = ("unitPrice", "price")  # major units as the seed writes them (1598.5)
ITEM_LABEL = ("name", "sku")
TOTAL_MINOR = ("totalMinor",)
TOTAL_MAJOR = ("total", "grandTotal")
LINK_FIELDS = ("resetUrl", "trackingUrl")  # put in an href by the templates: http(s) only

# data fields a job of each name must carry (money and items are checked as above)
REQUIRED_FIELDS: dict[EmailJob, tuple[str, ...]] = {
    EmailJob.ORDER_CONFIRMATION: ("orderNumber", "items", "total"),
    EmailJob.SHIPPING_NOTIFICATION: ("orderNumber",),
    EmailJob.PASSWORD_RESET: ("resetUrl",),
    EmailJob.WELCOME: (),
    EmailJob.ORDER_CANCELLED: ("orderNumber",),
}

# Fields of an email job that its producers generate (addresses, ids, SKUs, amounts, carrier
# data): the payload guard screens them by name only, since one generated number in ten passes
# Luhn; every other value (data.note, a reason a person typed ...) is free text and is screened
# for card numbers, token links and JWTs too (bridge/guard.py)
EMAIL_SYSTEM_FIELDS = frozenset(
    {
        "to", "subject", "template",
        *(f"data.{name}" for name in ("orderNumber", "invoiceNumber", "currency", "carrier",
                                      "trackingNumber", *TOTAL_MINOR, *TOTAL_MAJOR)),
        *(f"data.items[].{name}" for name in ("sku", *ITEM_QUANTITY, *ITEM_PRICE_MINOR,
                                              *ITEM_PRICE_MAJOR, *ITEM_LABEL)),
    }
)  # fmt: skip
