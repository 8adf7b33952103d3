"""Database models (sqlmodel) and the engine: SQLite file by default, PostgreSQL by URL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Column, Table, Text, UniqueConstraint, event
from sqlalchemy.engine import Engine
from sqlmodel import Field, SQLModel, create_engine

from orderflow.contracts.inventory import ReservationStatus
from orderflow.contracts.mail import MailDeliveryStatus
from orderflow.contracts.payment import WebhookEventStatus
from orderflow.contracts.review import ReviewStatus


def utcnow() -> datetime:
    """Timezone-aware now, for row timestamps (never used inside workflow code)."""
    return datetime.now(UTC)


# Money columns (price, total, unit_price, amount) are BIGINT: a 32-bit INTEGER on PostgreSQL
# ends at ₹2.1 crore in paise; a total past BIGINT is refused before it reaches one (MINOR_LIMIT)


class Product(SQLModel, table=True):
    """A stock-keeping unit: on_hand is sellable, reserved is held for open orders."""

    sku: str = Field(primary_key=True)
    name: str
    price: int = Field(sa_type=BigInteger)  # minor units of the shop currency
    on_hand: int = Field(ge=0)
    reserved: int = Field(default=0, ge=0)


class Order(SQLModel, table=True):
    """An order as the order service placed it; status mirrors the workflow's."""

    id: str = Field(primary_key=True)
    customer_id: str = Field(index=True)
    email: str
    status: str = Field(index=True)  # OrderStatus
    total: int = Field(sa_type=BigInteger)  # minor units of `currency`
    currency: str
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)


class OrderItem(SQLModel, table=True):
    """One line of an order, priced from the catalogue when reserved."""

    id: int | None = Field(default=None, primary_key=True)
    order_id: str = Field(foreign_key="order.id", index=True)
    sku: str = Field(foreign_key="product.sku")
    quantity: int
    unit_price: int = Field(sa_type=BigInteger)  # minor units


class Reservation(SQLModel, table=True):
    """Stock held for an order; RESERVED → RELEASED or SHIPPED, each exactly once."""

    __table_args__ = (UniqueConstraint("order_id", "sku"),)
    id: int | None = Field(default=None, primary_key=True)
    order_id: str = Field(index=True)
    sku: str = Field(foreign_key="product.sku")
    quantity: int
    status: str = ReservationStatus.RESERVED.value  # ReservationStatus
    updated_at: datetime = Field(default_factory=utcnow)


class Payment(SQLModel, table=True):
    """A capture or refund seen or made for an order; payment_id is unique per provider."""

    __table_args__ = (UniqueConstraint("provider", "payment_id"),)
    id: int | None = Field(default=None, primary_key=True)
    order_id: str = Field(index=True)
    provider: str
    payment_id: str
    kind: str  # PaymentKind
    amount: int = Field(sa_type=BigInteger)  # minor units of `currency`
    currency: str = ""
    status: str  # PaymentStatus
    refund_of: str = Field(default="", index=True)  # a refund: the captured payment it gives back
    detail: str = ""
    created_at: datetime = Field(default_factory=utcnow)


class Invoice(SQLModel, table=True):
    """The invoice generated when an order is confirmed, as rendered HTML."""

    order_id: str = Field(primary_key=True)
    number: str = Field(unique=True)
    html: str = Field(sa_column=Column(Text, nullable=False))
    total: int = Field(sa_type=BigInteger)  # minor units
    created_at: datetime = Field(default_factory=utcnow)


class Review(SQLModel, table=True):
    """A manual review and, once decided, the admin's decision."""

    id: str = Field(primary_key=True)
    order_id: str = Field(index=True)
    kind: str  # ReviewKind
    reason: str
    status: str = Field(default=ReviewStatus.PENDING.value, index=True)  # ReviewStatus
    reviewer: str = ""
    note: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    decided_at: datetime | None = None


class DailyReport(SQLModel, table=True):
    """Orders and revenue by status for one day, computed by the scheduled report."""

    day: str = Field(primary_key=True)
    timezone: str
    figures: str = Field(sa_column=Column(Text, nullable=False))  # JSON
    created_at: datetime = Field(default_factory=utcnow)


class ErpRecord(SQLModel, table=True):
    """What the local ERP stand-in received (used when no ERP URL is configured)."""

    order_id: str = Field(primary_key=True)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    received_at: datetime = Field(default_factory=utcnow)


# execution option of a read-only transaction: on SQLite a deferred BEGIN, which takes no lock
# under WAL, so reads never queue behind writers for the write lock
READ_ONLY = "orderflow_read_only"


def table(model: type[SQLModel]) -> Table:
    """A model's table, for Core statements on hot paths (no ORM identity map or unit of work)."""
    found = model.__table__  # type: ignore[attr-defined]
    assert isinstance(found, Table)
    return found


def reader(engine: Engine) -> Engine:
    """The same engine (pool, events) for transactions that only read; never write through it."""
    return engine.execution_options(**{READ_ONLY: True})


DB_CONNECT_TIMEOUT_SECONDS = 10  # PostgreSQL: a host that drops packets fails a connect this fast


def make_engine(url: str) -> Engine:
    """Create the engine (no tables: `orderflow.schema.upgrade` owns the schema).

    SQLite gets WAL and writer-first transactions; PostgreSQL checks pooled connections and
    gives up a connect after DB_CONNECT_TIMEOUT_SECONDS (unless the URL sets connect_timeout).
    """
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
        if "connect_timeout" not in url:  # the URL's own setting wins
            kwargs["connect_args"] = {"connect_timeout": DB_CONNECT_TIMEOUT_SECONDS}
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        _sqlite_writer_first(engine)
    return engine


def _sqlite_writer_first(engine: Engine) -> None:
    # pysqlite's deferred BEGIN lets two readers deadlock on upgrade; take the write lock first.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives a process crash; only an OS crash may lose the last ones
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


class SimulatedGatewayAccount(SQLModel, table=True):
    """The simulated gateway's own book: per-order failure rule and the calls it has seen."""

    order_id: str = Field(primary_key=True)
    fail_captures: int = 0  # decline this many capture calls before accepting
    decline_all: bool = False
    captures_seen: int = 0
    refunds_seen: int = 0


class WebhookEvent(SQLModel, table=True):
    """A gateway's webhook event, recorded once per (provider, event_id), and its outcome."""

    __table_args__ = (UniqueConstraint("provider", "event_id"),)
    id: int | None = Field(default=None, primary_key=True)
    provider: str  # stripe | razorpay
    event_id: str
    type: str
    order_id: str = Field(default="", index=True)
    payment_id: str = Field(default="", index=True)
    amount: int = Field(default=0, sa_type=BigInteger)  # minor units of `currency`, as sent
    currency: str = ""
    status: str = WebhookEventStatus.RECEIVED.value  # WebhookEventStatus
    detail: str = ""
    received_at: datetime = Field(default_factory=utcnow)
    processed_at: datetime | None = None


class MailDelivery(SQLModel, table=True):
    """One mail of an email job, by Message-ID: in the database, so a Redis crash cannot lose it."""

    # fixed by the job's identity and content: queue, job id, recipient, template, data digest
    # (mail/processor.py), so a job id handed out again for another mail is another delivery
    message_id: str = Field(primary_key=True)
    queue: str
    job_id: str = Field(index=True)
    recipient: str
    status: str = MailDeliveryStatus.SENDING.value  # MailDeliveryStatus
    attempts: int = 1  # attempts that entered the SMTP conversation
    claimed_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = None
    template: str | None = None  # the email job (template) name
    digest: str | None = None  # SHA-256 of the job's data, canonical JSON
    # when the message was handed over (DATA): from then on a lost reply leaves it UNKNOWN
    data_at: datetime | None = None
    detail: str | None = None  # why the outcome is UNKNOWN
