"""The email queue's processor: render the job's template (HTML + text) and hand it to SMTP once.

Once: every mail has a delivery record in the database, keyed by its Message-ID (fixed by the
job id), claimed before the SMTP conversation and marked SENT when the relay accepts. A retry
or a re-run after a stall (Redis died after SMTP accepted, a worker was killed) finds it SENT
and sends nothing. Only a process dying inside the SMTP conversation itself leaves it unknown;
that claim is taken over (and the mail sent again) once it is older than CLAIM_STALE_SECONDS.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiosmtplib
from bullmq import UnrecoverableError
from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from bridge.errors import MalformedJobError, RetryLater
from bridge.job import Job
from bridge.specs import QueueSpec
from bridge.tracing import client_span
from mail.view import template_view
from orderflow.contracts.mail import TEMPLATE_ALIASES, EmailJob, MailDeliveryStatus
from orderflow.db import MailDelivery
from orderflow.settings import Settings
from orderflow.templating import is_html_template

TEMPLATES = Path(__file__).parent / "templates"
SMTP_TIMEOUT_SECONDS = 10.0  # one SMTP conversation; the job timeout bounds the whole attempt
# A claim older than this belongs to an attempt that died inside the SMTP conversation
CLAIM_STALE_SECONDS = 3 * SMTP_TIMEOUT_SECONDS
_NOT_ATOM = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]")


@dataclass(frozen=True)
class RenderedEmail:
    """A mail ready to send."""

    to: str
    subject: str
    text: str
    html: str
    message_id: str


def template_environment() -> Environment:
    """Jinja2 environment for the mail templates: HTML autoescaped, an unknown name an error.

    StrictUndefined: a template reading a field its view does not have fails the job instead of
    rendering a blank (the view, mail/view.py, has every field, None when absent).
    """
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=is_html_template,
        keep_trailing_newline=True,
        undefined=StrictUndefined,
    )


def message_id_for(queue: str, job_id: str) -> str:
    """A Message-ID fixed by the job id, so every attempt of one job sends the same mail."""
    digest = hashlib.sha256(f"{queue}\0{job_id}".encode()).hexdigest()[:16]
    readable = _NOT_ATOM.sub("-", job_id)[:64].strip(".") or "job"
    return f"<{readable}.{digest}@{queue}.orderflow>"


def template_for(job: Job) -> EmailJob:
    """The template (a job name) for this job: data.template (either naming), else the job's name."""
    wanted = job.data.get("template") or job.name
    name = TEMPLATE_ALIASES.get(wanted, wanted)
    if name not in set(EmailJob):
        raise MalformedJobError(job.queue, job.name, job.id, f"unknown template {wanted!r}")
    return EmailJob(name)


def check_email_job(job: Job) -> None:
    """Refuse data that is not `{to, subject, template?, data?}` (seed's email job shape).

    What is inside `data` is checked per template by mail/view.py.
    """
    data = job.data
    if not isinstance(data, dict):
        raise MalformedJobError(job.queue, job.name, job.id, "data is not an object")
    to = data.get("to")
    if not isinstance(to, str) or "@" not in to or "\n" in to or "\r" in to:
        raise MalformedJobError(job.queue, job.name, job.id, f"bad recipient {to!r}")
    subject = data.get("subject")
    if not isinstance(subject, str) or not subject.strip() or "\n" in subject:
        raise MalformedJobError(job.queue, job.name, job.id, f"bad subject {subject!r}")


class DeliveryLog:
    """The `maildelivery` table: one row per mail, claimed before sending, SENT once accepted."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def claim(self, message_id: str, job: Job, recipient: str) -> MailDeliveryStatus | None:
        """Claim the mail for this attempt (None), or say why not: SENT, or SENDING elsewhere."""
        now = datetime.now(UTC)
        with Session(self.engine) as session:
            row = session.get(MailDelivery, message_id)
            if row is None:
                session.add(
                    MailDelivery(
                        message_id=message_id, queue=job.queue, job_id=job.id, recipient=recipient
                    )
                )
                try:
                    session.commit()
                except IntegrityError:  # a concurrent attempt claimed it first
                    return MailDeliveryStatus.SENDING
                return None
            if row.status == MailDeliveryStatus.SENT:
                return MailDeliveryStatus.SENT
            claimed = row.claimed_at
            if claimed.tzinfo is None:  # SQLite gives naive datetimes back
                claimed = claimed.replace(tzinfo=UTC)
            if now - claimed < timedelta(seconds=CLAIM_STALE_SECONDS):
                return MailDeliveryStatus.SENDING
            row.claimed_at, row.attempts = now, row.attempts + 1  # that attempt died mid-SMTP
            session.add(row)
            session.commit()
            return None

    def sent(self, message_id: str) -> None:
        """The relay accepted the mail."""
        with Session(self.engine) as session:
            row = session.get(MailDelivery, message_id)
            if row is not None:
                row.status, row.sent_at = MailDeliveryStatus.SENT, datetime.now(UTC)
                session.add(row)
                session.commit()

    def release(self, message_id: str) -> None:
        """The relay did not take the mail: the next attempt may send it at once."""
        with Session(self.engine) as session:
            row = session.get(MailDelivery, message_id)
            if row is not None and row.status != MailDeliveryStatus.SENT:
                session.delete(row)
                session.commit()

    def status(self, message_id: str) -> MailDeliveryStatus | None:
        """The record's status, None if there is none."""
        with Session(self.engine) as session:
            row = session.get(MailDelivery, message_id)
            return MailDeliveryStatus(row.status) if row is not None else None


class EmailProcessor:
    """Processor of the email queue; delivery is recorded so a retried job does not mail twice."""

    def __init__(self, settings: Settings, spec: QueueSpec, engine: Engine) -> None:
        self.settings = settings
        self.spec = spec
        self.deliveries = DeliveryLog(engine)
        self.env = template_environment()

    def render(self, job: Job) -> RenderedEmail:
        """Render the job's mail (HTML and plain text) without sending it."""
        check_email_job(job)
        name = template_for(job)
        context: dict[str, Any] = {
            "to": job.data["to"],
            "subject": job.data["subject"],
            "data": template_view(job, name, self.settings.currency),
        }
        try:
            text = self.env.get_template(f"{name}.txt.j2").render(context)
            html = self.env.get_template(f"{name}.html.j2").render(context)
        except (TemplateError, TypeError, ValueError, AttributeError) as err:
            # the same data fails the same way on every attempt: do not retry it
            reason = f"template {name} cannot render this data: {err}"
            raise MalformedJobError(job.queue, job.name, job.id, reason) from err
        return RenderedEmail(
            to=job.data["to"],
            subject=job.data["subject"],
            text=text,
            html=html,
            message_id=message_id_for(job.queue, job.id),
        )

    async def __call__(self, job: Job) -> dict[str, Any]:
        """Send the job's mail unless an earlier attempt already did; returns the Message-ID."""
        mail = self.render(job)
        claim = await asyncio.to_thread(self.deliveries.claim, mail.message_id, job, mail.to)
        if claim is MailDeliveryStatus.SENT:
            return {"sent": True, "messageId": mail.message_id, "duplicate": True}
        if claim is MailDeliveryStatus.SENDING:
            # the other attempt finishes, or its claim goes stale (its worker died mid-SMTP):
            # wait without using up this job's attempts
            raise RetryLater(
                int(CLAIM_STALE_SECONDS * 1000 / 4),
                f"{job.queue}: job {job.id!r} ({job.name}): another attempt is sending"
                f" {mail.message_id} right now; retrying later",
            )
        message = EmailMessage()
        message["From"] = self.settings.mail_from
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = mail.message_id
        message["X-Orderflow-Job"] = f"{job.queue}/{job.name}/{job.id}"
        message.set_content(mail.text)
        message.add_alternative(mail.html, subtype="html")
        try:
            with client_span("smtp send", **{"server.address": self.settings.smtp_host}):
                await aiosmtplib.send(
                    message,
                    hostname=self.settings.smtp_host,
                    port=self.settings.smtp_port,
                    timeout=SMTP_TIMEOUT_SECONDS,
                )
        except BaseException as err:
            await asyncio.shield(asyncio.to_thread(self.deliveries.release, mail.message_id))
            if isinstance(err, aiosmtplib.SMTPResponseException) and 500 <= err.code < 600:
                # a permanent refusal: retrying cannot help
                raise UnrecoverableError(
                    f"{job.queue}: job {job.id!r} ({job.name}): SMTP refused {mail.to}: {err}"
                ) from err
            raise
        await asyncio.to_thread(self.deliveries.sent, mail.message_id)
        return {"sent": True, "messageId": mail.message_id}
