"""The email queue's tables are complete: a job name, a template or a notification kind that is
added without the rest fails here, naming what is missing (docs/EXTENDING.md, "an email kind")."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from bullmq import UnrecoverableError
from sqlalchemy.engine import Engine
from sqlmodel import Session

from activities.notify import JOBS, NotificationActivities
from orderflow.contracts.mail import REQUIRED_FIELDS, TEMPLATE_ALIASES, EmailJob
from orderflow.contracts.order import NotificationKind, NotifyInput
from orderflow.db import Order, OrderItem, Product
from tests.test_mail_view import job, processor

TEMPLATES = Path(__file__).resolve().parent.parent / "mail" / "templates"

# a value for every field some template requires: a new required field needs one here
SAMPLE_FIELDS: dict[str, Any] = {
    "orderNumber": "o-complete-1",
    "items": [{"sku": "CAP", "name": "Cap", "qty": 1, "price": 12.5}],
    "total": "12.50",
    "resetUrl": "https://shop.example/reset?token=t-1",
}


def test_every_email_job_has_an_html_and_a_text_template_and_no_template_is_orphaned() -> None:
    names = {p.name for p in TEMPLATES.glob("*.j2") if not p.name.startswith("_")}
    wanted = {f"{j}.{kind}.j2" for j in EmailJob for kind in ("html", "txt")}
    assert wanted - names == set(), "email jobs without a template"
    assert names - wanted == set(), "templates no email job renders"


def test_every_email_job_lists_its_required_fields_and_has_one_seed_alias() -> None:
    assert set(REQUIRED_FIELDS) == set(EmailJob), "REQUIRED_FIELDS must name every email job"
    by_job: dict[str, list[str]] = {}
    for alias, name in TEMPLATE_ALIASES.items():
        by_job.setdefault(name, []).append(alias)
    for name in EmailJob:
        # the seed named each template in snake_case without the verb: send-welcome -> welcome
        seed_name = name.removeprefix("send-").replace("-", "_")
        assert by_job.get(name) == [seed_name], f"{name}: its seed alias {seed_name!r}"


@pytest.mark.parametrize("name", list(EmailJob))
def test_every_email_job_renders_from_its_required_fields_alone_and_refuses_without_each(
    mail_engine: Engine, name: EmailJob
) -> None:
    required = REQUIRED_FIELDS[name]
    unknown = set(required) - set(SAMPLE_FIELDS)
    assert not unknown, f"{name}: add a sample value for {sorted(unknown)} to SAMPLE_FIELDS"
    data = {field: SAMPLE_FIELDS[field] for field in required}
    mail = processor(mail_engine).render(job(name, data))
    assert mail.text.strip() and mail.html.strip()
    for field in required:
        partial = {k: v for k, v in data.items() if k != field}
        with pytest.raises(UnrecoverableError, match=re.escape(field)):
            processor(mail_engine).render(job(name, partial))


class _Recorder:
    async def add(self, name: str, data: dict[str, Any], opts: dict[str, Any] | None = None) -> str:
        raise AssertionError("the test reads the job data; nothing is enqueued")


def test_every_notification_kind_is_an_email_job_the_activity_fills_and_the_mail_renders(
    mail_engine: Engine,
) -> None:
    assert set(JOBS) == set(NotificationKind), "activities/notify.py JOBS must map every kind"
    order_id, sku = f"o-{uuid.uuid4().hex[:10]}", f"SKU-{uuid.uuid4().hex[:8]}"
    with Session(mail_engine) as session:
        session.add(Product(sku=sku, name="Cap", price=1250, on_hand=5))
        session.commit()
        session.add(
            Order(
                id=order_id,
                customer_id="c-1",
                email="meera@example.com",
                status="CONFIRMED",
                total=2500,
                currency="INR",
            )
        )
        session.commit()
        session.add(OrderItem(order_id=order_id, sku=sku, quantity=2, unit_price=1250))
        session.commit()
    activities = NotificationActivities(mail_engine, _Recorder())
    for kind, (name, subject) in JOBS.items():
        written = activities._job_data(
            NotifyInput(order_id=order_id, kind=kind, carrier="DHL", tracking_number="JD0142"),
            subject,
        )
        assert written["template"] == name
        assert set(REQUIRED_FIELDS[name]) <= set(written["data"]), kind
        mail = processor(mail_engine).render(job(name, written["data"], f"{kind}-{order_id}"))
        assert order_id in mail.text, kind
