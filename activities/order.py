"""Order side effects: place (and reserve), record payment, confirm with invoice, status, ERP."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.erp import Erp
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
from orderflow.db import Invoice, Order, OrderItem, Payment, Product, Reservation, reader
from orderflow.money import format_money
from orderflow.templating import is_html_template


def invoice_templates() -> Environment:
    """The Jinja2 environment for invoices (autoescaped HTML)."""
    env = Environment(loader=PackageLoader("activities", "templates"), autoescape=is_html_template)
    env.filters["money"] = format_money
    return env


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
        try:
            return self._place(order)
        except IntegrityError as err:  # the same input fails the same way: do not retry it
            raise ApplicationError(
                f"order {order.order_id!r} cannot be placed: {err.orig}",
                type="OrderRejected",
                non_retryable=True,
            ) from err

    def _place(self, order: OrderInput) -> PlaceOrderResult:
        wanted: dict[str, int] = {}
        for line in order.items:
            wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
        lines = [OrderLine(sku, quantity) for sku, quantity in wanted.items()]
        with Session(self.engine) as session:
            existing = session.get(Order, order.order_id)
            if existing is not None:
                return PlaceOrderResult(
                    reserved=existing.status != OrderStatus.REJECTED,
                    total=existing.total,
                    currency=existing.currency,
                    reason="" if existing.status != OrderStatus.REJECTED else "not enough stock",
                )
            total, shortages, invalid = 0, [], []
            prices: dict[str, int] = {}
            # rows locked in key order, as stock sync does, so concurrent orders never deadlock
            for line in sorted(lines, key=lambda line: line.sku):
                if line.quantity <= 0:
                    invalid.append(
                        f"quantity {line.quantity} of {line.sku} is not a positive number"
                    )
                    continue
                product = session.get(Product, line.sku)
                if product is None:
                    shortages.append(f"unknown SKU {line.sku!r}")
                    continue
                prices[line.sku] = product.price
                total += product.price * line.quantity
                moved = session.execute(
                    update(Product)
                    .where(col(Product.sku) == line.sku, col(Product.on_hand) >= line.quantity)
                    .values(
                        on_hand=Product.on_hand - line.quantity,
                        reserved=Product.reserved + line.quantity,
                    )
                )
                if moved.rowcount != 1:  # type: ignore[attr-defined]
                    shortages.append(
                        f"{line.sku}: {line.quantity} wanted, {product.on_hand} on hand"
                    )
            if shortages or invalid:
                session.rollback()
                reason = (
                    "invalid order: " + "; ".join(invalid)
                    if invalid
                    else "not enough stock: " + "; ".join(shortages)
                )
                rejected = Order(
                    id=order.order_id,
                    customer_id=order.customer_id,
                    email=order.email,
                    status=OrderStatus.REJECTED,
                    total=total,
                    currency=self.currency,
                )
                session.add(rejected)
                session.commit()
                return PlaceOrderResult(
                    reserved=False, total=total, currency=self.currency, reason=reason
                )
            session.add(
                Order(
                    id=order.order_id,
                    customer_id=order.customer_id,
                    email=order.email,
                    status=OrderStatus.PENDING_PAYMENT,
                    total=total,
                    currency=self.currency,
                )
            )
            for line in lines:
                session.add(
                    OrderItem(
                        order_id=order.order_id,
                        sku=line.sku,
                        quantity=line.quantity,
                        unit_price=prices[line.sku],
                    )
                )
                session.add(
                    Reservation(order_id=order.order_id, sku=line.sku, quantity=line.quantity)
                )
            session.commit()
        return PlaceOrderResult(reserved=True, total=total, currency=self.currency)

    @activity.defn
    def record_payment(self, data: ConfirmInput) -> None:
        """Record a received payment (once per provider payment id) and mark the order paid."""
        with Session(self.engine) as session:
            self._record_payment(session, data)
            self._set_status(session, data.order_id, OrderStatus.PAID)
            session.commit()

    @activity.defn
    def confirm_order(self, data: ConfirmInput) -> ConfirmResult:
        """Record the payment, render and store the invoice, mark the order confirmed."""
        with Session(self.engine) as session:
            order = self._order(session, data.order_id)
            self._record_payment(session, data)
            invoice = session.get(Invoice, order.id)
            if invoice is None:
                invoice = self._render_invoice(session, order, data)
                session.add(invoice)
            self._set_status(session, order.id, OrderStatus.CONFIRMED)
            number = invoice.number  # read before the commit expires it (a reload is a transaction)
            session.commit()
            return ConfirmResult(invoice_number=number)

    @activity.defn
    def set_status(self, data: StatusInput) -> None:
        """Mirror the workflow's status into the orders table."""
        with Session(self.engine) as session:
            self._set_status(session, data.order_id, data.status)
            session.commit()

    @activity.defn
    def sync_erp(self, order_id: str) -> ErpSyncResult:
        """Push the confirmed order, its lines and its invoice number to the ERP."""
        with Session(self.reads) as session:
            order = self._order(session, order_id)
            items = session.exec(select(OrderItem).where(OrderItem.order_id == order_id)).all()
            invoice = session.get(Invoice, order_id)
            payload: dict[str, Any] = {
                "order_id": order.id,
                "customer_id": order.customer_id,
                "total": order.total,
                "currency": order.currency,
                "invoice": invoice.number if invoice else None,
                "items": [
                    {"sku": i.sku, "quantity": i.quantity, "unit_price": i.unit_price}
                    for i in items
                ],
            }
        return ErpSyncResult(order_id=order_id, target=self.erp.push_order(order_id, payload))

    def _order(self, session: Session, order_id: str) -> Order:
        order = session.get(Order, order_id)
        if order is None:
            raise ApplicationError(f"order {order_id!r} is not in the database", non_retryable=True)
        return order

    def _set_status(self, session: Session, order_id: str, status: str) -> None:
        order = self._order(session, order_id)
        order.status = status
        order.updated_at = datetime.now(UTC)
        session.add(order)

    def _record_payment(self, session: Session, data: ConfirmInput) -> None:
        p = data.payment
        found = session.exec(
            select(Payment).where(
                Payment.provider == p.provider, Payment.payment_id == p.payment_id
            )
        ).first()
        if found is not None:
            if found.order_id != data.order_id:
                raise ApplicationError(
                    f"payment {p.payment_id!r} already belongs to order {found.order_id!r}, not {data.order_id!r}",
                    non_retryable=True,
                )
            return
        session.add(
            Payment(
                order_id=data.order_id,
                provider=p.provider,
                payment_id=p.payment_id,
                kind=PaymentKind.CAPTURE,
                amount=p.amount,
                currency=p.currency,
                status=PaymentStatus.SUCCEEDED,
            )
        )
        try:
            session.flush()
        except IntegrityError as err:  # a concurrent retry recorded it first
            raise ApplicationError(
                f"payment {p.payment_id!r} recorded concurrently; retrying"
            ) from err

    def _render_invoice(self, session: Session, order: Order, data: ConfirmInput) -> Invoice:
        rows = session.exec(
            select(OrderItem, Product).where(
                OrderItem.order_id == order.id, OrderItem.sku == Product.sku
            )
        ).all()
        lines = [
            {
                "sku": item.sku,
                "name": product.name,
                "quantity": item.quantity,
                "unit_price": item.unit_price,
                "amount": item.unit_price * item.quantity,
            }
            for item, product in rows
        ]
        number = f"INV-{order.id}"
        html = self.templates.get_template("invoice.html.j2").render(
            number=number,
            order=order,
            lines=lines,
            payment=data.payment,
            issued_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        )
        return Invoice(order_id=order.id, number=number, html=html, total=order.total)
