"""What a mail template sees: one job's `data.data`, read in the seed's shape or ours.

The seed's Node producers write items `{sku, name, qty, price}` and `total` (or `grandTotal`) in
major units with no currency; ours write items `{sku, quantity, unitPrice, unitPriceMinor}` and
`totalMinor` + `currency` beside `total`. Both become one view: amounts formatted in the job's
currency (the shop's, `settings.currency`, when the job names none), every field the templates
read present (None when absent). Minor units win when a job carries both (they are exact);
major units are rounded half-even to the minor unit, for display only. A required field that is
missing or unreadable raises MalformedJobError naming the field and the job id: the job fails
unrecoverably (to the DLQ) instead of a mail with a blank in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn
from urllib.parse import urlsplit

from bridge.errors import MalformedJobError, shown
from bridge.job import Job
from orderflow.contracts.mail import (
    ITEM_LABEL,
    ITEM_PRICE_MAJOR,
    ITEM_PRICE_MINOR,
    ITEM_QUANTITY,
    LINK_FIELDS,
    REQUIRED_FIELDS,
    TOTAL_MAJOR,
    TOTAL_MINOR,
    EmailJob,
)
from orderflow.money import MoneyError, exponent, format_money, round_major

RESET_LINK_MINUTES = 30  # what the reset mail says when the job does not say how long


class MailData:
    """Reads the fields of one job's data; every problem names the field and the job."""

    def __init__(self, job: Job, default_currency: str) -> None:
        self.job = job
        raw = job.data.get("data") if isinstance(job.data, dict) else None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.fail("data", "is not an object")
        self.raw: dict[str, Any] = raw
        currency = raw.get("currency") or default_currency
        if not isinstance(currency, str):
            self.fail("data.currency", "is not a currency code")
        try:
            exponent(currency)
        except MoneyError:
            self.fail("data.currency", f"{shown(currency)!r} is not an ISO 4217 currency code")
        self.currency = currency.upper()

    def fail(self, field: str, problem: str) -> NoReturn:
        """Refuse the job: the same data fails the same way on every attempt."""
        job = self.job
        raise MalformedJobError(job.queue, job.name, job.id, f"{field} {problem}")

    def text(
        self, field: str, source: dict[str, Any] | None = None, where: str = "data"
    ) -> str | None:
        """A text field (a number is taken as its text, as JavaScript would show it)."""
        value = (self.raw if source is None else source).get(field)
        if value is None or value == "":
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.fail(f"{where}.{field}", "is not text")
        return str(value)

    def link(self, field: str) -> str | None:
        """An http(s) link: autoescape keeps markup out of an href, not a javascript: URL."""
        value = self.text(field)
        if value is not None and not _web_link(value):
            self.fail(f"data.{field}", "is not an http(s) link")
        return value

    def whole(self, field: str) -> int | None:
        """A positive whole number."""
        value = self.raw.get(field)
        if value is None:
            return None
        return self._count(value, f"data.{field}")

    def money(
        self, source: dict[str, Any], minor: Sequence[str], major: Sequence[str], where: str
    ) -> str | None:
        """The first amount present, formatted in the job's currency ('₹1,598.50')."""
        for name in minor:
            value = source.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                self.fail(f"{where}.{name}", "is not a whole number of minor units")
            return format_money(value, self.currency)
        for name in major:
            value = source.get(name)
            if value is None or value == "":
                continue
            try:
                return format_money(round_major(value, self.currency), self.currency)
            except MoneyError:
                self.fail(f"{where}.{name}", f"{shown(str(value))!r} is not an amount")
        return None

    def items(self) -> list[dict[str, Any]] | None:
        """The order lines: label, quantity and unit price of each, all required."""
        items = self.raw.get("items")
        if items is None:
            return None
        if not isinstance(items, list):
            self.fail("data.items", "is not a list")
        lines = []
        for i, item in enumerate(items):
            where = f"data.items[{i}]"
            if not isinstance(item, dict):
                self.fail(where, "is not an object")
            label = next(
                (t for t in (self.text(n, item, where) for n in ITEM_LABEL) if t is not None),
                None,
            )
            if label is None:
                self.fail(where, _missing(ITEM_LABEL))
            quantity = next((item[n] for n in ITEM_QUANTITY if item.get(n) is not None), None)
            if quantity is None:
                self.fail(where, _missing(ITEM_QUANTITY))
            price = self.money(item, ITEM_PRICE_MINOR, ITEM_PRICE_MAJOR, where)
            if price is None:
                self.fail(where, _missing((*ITEM_PRICE_MAJOR, *ITEM_PRICE_MINOR)))
            lines.append(
                {
                    "label": label,
                    "sku": self.text("sku", item, where),
                    "quantity": self._count(quantity, where),
                    "price": price,
                }
            )
        return lines

    def _count(self, value: Any, where: str) -> int:
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            value = int(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(where, f"{shown(str(value))!r} is not a whole number")
        return value


def template_view(job: Job, template: EmailJob, default_currency: str) -> dict[str, Any]:
    """Every field the templates read, from the job's data; required ones checked."""
    data = MailData(job, default_currency)
    view: dict[str, Any] = {
        "orderNumber": data.text("orderNumber"),
        "items": data.items(),
        "total": data.money(data.raw, TOTAL_MINOR, TOTAL_MAJOR, "data"),
        "currency": data.currency,
        "invoiceNumber": data.text("invoiceNumber"),
        "note": data.text("note"),
        "name": data.text("name"),
        "carrier": data.text("carrier"),
        "trackingNumber": data.text("trackingNumber"),
        "expiresInMinutes": data.whole("expiresInMinutes") or RESET_LINK_MINUTES,
    }
    for field in LINK_FIELDS:
        view[field] = data.link(field)
    for field in REQUIRED_FIELDS[template]:
        if view[field] == []:
            data.fail(f"data.{field}", "is empty")
        if view[field] is None:
            names = {"total": (*TOTAL_MAJOR, *TOTAL_MINOR)}.get(field, (field,))
            data.fail("data", _missing(names))
    return view


def _missing(names: Sequence[str]) -> str:
    if len(names) == 1:
        return f"has no {names[0]}"
    return f"has none of {', '.join(names)}"


def _web_link(link: str) -> bool:
    try:
        parts = urlsplit(link.strip())
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)
