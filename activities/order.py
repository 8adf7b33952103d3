"""Order side effects: place (and reserve), record payment, confirm with invoice, status, ERP."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

from jinja2 import Environment, PackageLoader
from sqlalchemy import Row, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.erp import Erp
from orderflow.contracts.inventory import ReservationStatus
from orderflow.contracts.order import (
    ConfirmInput,
    ConfirmResult,
    ErpSyncResult,
    OrderInput,
    OrderLine,
    OrderStatus,
    PlaceOrderResult,
    StatusInput,
)
from orderflow.contracts.payment import PaymentKind, PaymentStatus
from orderflow.db import Invoice, Order, OrderItem, Payment, Product, Reservation, reader, table
from orderflow.money import MINOR_LIMIT, format_money
from orderflow.templating import is_html_template


def invoice_templates() -> Environment:
    """The Jinja2 environment for invoices (autoescaped HTML)."""
    env = Environment(loader=PackageLoader("activities", "templates"), autoescape=is_html_template)
    env.filters["money"] = format_money
    return env


# Core statements on the order's hot path: the ORM's identity map and unit of work cost more CPU
# per order than the SQL itself
ORDERS = table(Order)
ORDER_ITEMS = table(OrderItem)
PRODUCTS = table(Product)
RESERVATIONS = table(Reservation)
PAYMENTS = table(Payment)
INVOICES = table(Invoice)


class _Reserved(NamedTuple):
    """What reserving an order's lines found: its total, the unit prices, what is wrong."""

    total: int
    prices: dict[str, int]
    shortages: list[str]
    invalid: list[str]


class OrderActivities:
    """Database, invoice and ERP work for OrderWorkflow; every method is safe to retry."""

    def __init__(
        self, engine: Engine, erp: Erp, templates: Environment | None = None, currency: str = "INR"
    ):
        self.engine = engine
        self.reads = reader(engine)  # read-only transactions: on SQLite they take no write lock
        self.erp = erp
        self.templates = templates or invoice_templates()
        self.currency = currency

    @activity.defn
    def place_order(self, order: OrderInput) -> PlaceOrderResult:
        """Create the order and reserve its stock in one transaction; no stock → nothing reserved.

        Lines of one SKU are merged into one; a bad line rejects the order with the reason.
        """
        wanted: dict[str, int] = {}
        for line in order.items:
            wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
        lines = [OrderLine(sku, quantity) for sku, quantity in wanted.items()]
        try:
            return self._place(order, lines)
        except IntegrityError as err:
            # an earlier attempt that outlived its timeout committed this order meanwhile (its
            # thread is not stopped): the retry's insert meets that attempt's row
            with self.reads.connect() as conn:
                placed = self._placed(conn, order.order_id, lines)
            if placed is not None:
                return placed
            raise ApplicationError(  # the same input fails the same way: do not retry it
                f"order {order.order_id!r} cannot be placed: {err.orig}",
                type="OrderRejected",
                non_retryable=True,
            ) from err

    def _placed(
        self, conn: Connection, order_id: str, lines: list[OrderLine]
    ) -> PlaceOrderResult | None:
        """What placing the order answered, if an earlier attempt placed it; None if none did.

        Raises:
            ApplicationError: (non-retryable) the id belongs to an order of other items, or to
                one already past placing: not a retry of this one.
        """
        existing = conn.execute(
            select(ORDERS.c.status, ORDERS.c.total, ORDERS.c.currency).where(
                ORDERS.c.id == order_id
            )
        ).first()
        if existing is None:
            return None
        if existing.status == OrderStatus.REJECTED:  # no lines are kept for a rejected order
            return PlaceOrderResult(
                reserved=False,
                total=existing.total,
                currency=existing.currency,
                reason=f"order {order_id!r} was rejected by an earlier attempt to place it",
            )
        stored = conn.execute(
            select(ORDER_ITEMS.c.sku, ORDER_ITEMS.c.quantity).where(
                ORDER_ITEMS.c.order_id == order_id
            )
        ).all()
        kept = sorted((row.sku, row.quantity) for row in stored)
        asked = sorted((line.sku, line.quantity) for line in lines)
        if existing.status != OrderStatus.PENDING_PAYMENT or kept != asked:
            raise ApplicationError(
                f"order {order_id!r} is already placed, {existing.status} with items {kept};"
                f" this order has {asked}: not a retry of it",
                type="OrderRejected",
                non_retryable=True,
            )
        return PlaceOrderResult(reserved=True, total=existing.total, currency=existing.currency)

    def _place(self, order: OrderInput, lines: list[OrderLine]) -> PlaceOrderResult:
        with self.engine.connect() as conn:
            placed = self._placed(conn, order.order_id, lines)
            if placed is not None:
                return placed
            total, prices, shortages, invalid = self._reserve(conn, order.order_id, lines)
            now = datetime.now(UTC)
            row = {
                "id": order.order_id,
                "customer_id": order.customer_id,
                "email": order.email,
                "total": total,
                "currency": self.currency,
                "created_at": now,
                "updated_at": now,
            }
            if shortages or invalid:
                conn.rollback()
                reason = (
                    "invalid order: " + "; ".join(invalid)
                    if invalid
                    else "not enough stock: " + "; ".join(shortages)
                )
                conn.execute(insert(ORDERS).values({**row, "status": OrderStatus.REJECTED}))
                conn.commit()
                return PlaceOrderResult(
                    reserved=False, total=total, currency=self.currency, reason=reason
                )
            conn.execute(insert(ORDERS).values({**row, "status": OrderStatus.PENDING_PAYMENT}))
            conn.execute(
                insert(ORDER_ITEMS),
                [
                    {
                        "order_id": order.order_id,
                        "sku": line.sku,
                        "quantity": line.quantity,
                        "unit_price": prices[line.sku],
                    }
                    for line in lines
                ],
            )
            conn.execute(
                insert(RESERVATIONS),
                [
                    {
                        "order_id": order.order_id,
                        "sku": line.sku,
                        "quantity": line.quantity,
                        "status": ReservationStatus.RESERVED.value,
                        "updated_at": now,
                    }
                    for line in lines
                ],
            )
            conn.commit()
        return PlaceOrderResult(reserved=True, total=total, currency=self.currency)

    def _reserve(self, conn: Connection, order_id: str, lines: list[OrderLine]) -> _Reserved:
        """Price each line and move its quantity from on hand to reserved, where there is stock.

        Raises:
            ApplicationError: (non-retryable) the total passes the largest amount a money
                column or a gateway holds.
        """
        total, shortages, invalid = 0, [], []
        prices: dict[str, int] = {}
        # rows locked in key order, as stock sync does, so concurrent orders never deadlock
        for line in sorted(lines, key=lambda line: line.sku):
            if line.quantity <= 0:
                invalid.append(f"quantity {line.quantity} of {line.sku} is not a positive number")
                continue
            product = conn.execute(
                select(PRODUCTS.c.price, PRODUCTS.c.on_hand).where(PRODUCTS.c.sku == line.sku)
            ).first()
            if product is None:
                shortages.append(f"unknown SKU {line.sku!r}")
                continue
            prices[line.sku] = product.price
            total += product.price * line.quantity
            if total >= MINOR_LIMIT:  # no money column (BIGINT) holds it, nor a gateway
                raise ApplicationError(
                    f"order {order_id!r} cannot be placed: its total of"
                    f" {total} minor units passes the largest amount, 2^63 - 1",
                    type="OrderRejected",
                    non_retryable=True,
                )
            moved = conn.execute(
                update(PRODUCTS)
                .where(PRODUCTS.c.sku == line.sku, PRODUCTS.c.on_hand >= line.quantity)
                .values(
                    on_hand=PRODUCTS.c.on_hand - line.quantity,
                    reserved=PRODUCTS.c.reserved + line.quantity,
                )
            )
            if moved.rowcount != 1:
                shortages.append(f"{line.sku}: {line.quantity} wanted, {product.on_hand} on hand")
        return _Reserved(total, prices, shortages, invalid)

    @activity.defn
    def record_payment(self, data: ConfirmInput) -> None:
        """Record a received payment (once per provider payment id) and mark the order paid."""
        with self.engine.begin() as conn:
            self._record_payment(conn, data)
            self._set_status(conn, data.order_id, OrderStatus.PAID)

    @activity.defn
    def record_refused_payment(self, data: ConfirmInput) -> None:
        """Record a payment the order refused and gives back (its refund row follows).

        The order's status stays as it is: the payment was never the order's.
        """
        with self.engine.begin() as conn:
            self._record_payment(conn, data)

    @activity.defn
    def confirm_order(self, data: ConfirmInput) -> ConfirmResult:
        """Record the payment, render and store the invoice, mark the order confirmed."""
        with self.engine.begin() as conn:
            order = self._order(conn, data.order_id)
            self._record_payment(conn, data)
            number = conn.execute(
                select(INVOICES.c.number).where(INVOICES.c.order_id == order.id)
            ).scalar_one_or_none()
            if number is None:
                number = f"INV-{order.id}"
                conn.execute(
                    insert(INVOICES).values(
                        order_id=order.id,
                        number=number,
                        html=self._render_invoice(conn, order, number, data),
                        total=order.total,
                        created_at=datetime.now(UTC),
                    )
                )
            self._set_status(conn, order.id, OrderStatus.CONFIRMED)
            return ConfirmResult(invoice_number=number)

    @activity.defn
    def set_status(self, data: StatusInput) -> None:
        """Mirror the workflow's status into the orders table."""
        with self.engine.begin() as conn:
            self._set_status(conn, data.order_id, data.status)

    @activity.defn
    def sync_erp(self, order_id: str) -> ErpSyncResult:
        """Push the confirmed order, its lines and its invoice number to the ERP."""
        with self.reads.connect() as conn:
            order = self._order(conn, order_id)
            items = conn.execute(
                select(ORDER_ITEMS.c.sku, ORDER_ITEMS.c.quantity, ORDER_ITEMS.c.unit_price).where(
                    ORDER_ITEMS.c.order_id == order_id
                )
            ).all()
            invoice = conn.execute(
                select(INVOICES.c.number).where(INVOICES.c.order_id == order_id)
            ).scalar_one_or_none()
            payload: dict[str, Any] = {
                "order_id": order.id,
                "customer_id": order.customer_id,
                "total": order.total,
                "currency": order.currency,
                "invoice": invoice,
                "items": [
                    {"sku": i.sku, "quantity": i.quantity, "unit_price": i.unit_price}
                    for i in items
                ],
            }
        return ErpSyncResult(order_id=order_id, target=self.erp.push_order(order_id, payload))

    def _order(self, conn: Connection, order_id: str) -> Row[str, str, int, str]:
        order = conn.execute(
            select(ORDERS.c.id, ORDERS.c.customer_id, ORDERS.c.total, ORDERS.c.currency).where(
                ORDERS.c.id == order_id
            )
        ).first()
        if order is None:
            raise ApplicationError(f"order {order_id!r} is not in the database", non_retryable=True)
        return order

    def _set_status(self, conn: Connection, order_id: str, status: str) -> None:
        changed = conn.execute(
            update(ORDERS)
            .where(ORDERS.c.id == order_id)
            .values(status=status, updated_at=datetime.now(UTC))
        )
        if changed.rowcount != 1:
            raise ApplicationError(f"order {order_id!r} is not in the database", non_retryable=True)

    def _record_payment(self, conn: Connection, data: ConfirmInput) -> None:
        p = data.payment
        found = conn.execute(
            select(PAYMENTS.c.order_id).where(
                PAYMENTS.c.provider == p.provider, PAYMENTS.c.payment_id == p.payment_id
            )
        ).first()
        if found is not None:
            if found.order_id != data.order_id:
                raise ApplicationError(
                    f"payment {p.payment_id!r} already belongs to order {found.order_id!r}, not {data.order_id!r}",
                    non_retryable=True,
                )
            return
        try:
            conn.execute(
                insert(PAYMENTS).values(
                    order_id=data.order_id,
                    provider=p.provider,
                    payment_id=p.payment_id,
                    kind=PaymentKind.CAPTURE,
                    amount=p.amount,
                    currency=p.currency,
                    status=PaymentStatus.SUCCEEDED,
                    refund_of="",
                    detail="",
                    created_at=datetime.now(UTC),
                )
            )
        except IntegrityError as err:  # a concurrent retry recorded it first
            raise ApplicationError(
                f"payment {p.payment_id!r} recorded concurrently; retrying"
            ) from err

    def _render_invoice(
        self, conn: Connection, order: Row[str, str, int, str], number: str, data: ConfirmInput
    ) -> str:
        rows = conn.execute(
            select(
                ORDER_ITEMS.c.sku, PRODUCTS.c.name, ORDER_ITEMS.c.quantity, ORDER_ITEMS.c.unit_price
            ).where(ORDER_ITEMS.c.order_id == order.id, ORDER_ITEMS.c.sku == PRODUCTS.c.sku)
        ).all()
        lines = [
            {
                "sku": row.sku,
                "name": row.name,
                "quantity": row.quantity,
                "unit_price": row.unit_price,
                "amount": row.unit_price * row.quantity,
            }
            for row in rows
        ]
        return self.templates.get_template("invoice.html.j2").render(
            number=number,
            order=order,
            lines=lines,
            payment=data.payment,
            issued_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        )
