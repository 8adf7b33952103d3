"""The email queue's processor: render the job's template (HTML + text) and hand it to SMTP once.

Once: every mail has a delivery record in the database, keyed by its Message-ID (fixed by the
job's identity and content: queue, job id and a digest of its data, which holds the recipient
and template), claimed before the SMTP conversation and marked SENT when the relay accepts. A
retry or a re-run after a stall (Redis died after SMTP accepted, a worker was killed) finds it
SENT and sends nothing; a job id handed out again for another mail (Node auto ids after Redis
lost writes) is another delivery and is sent.

A send that fails before the message is handed over (DATA) releases its claim: the retry sends
at once. Once it was handed over, a failure that is not the relay's own answer (a timeout on
the reply, a dropped connection, a worker that died) leaves the outcome UNKNOWN: the mail may
have gone, so no attempt sends it again for UNKNOWN_HOLD_SECONDS, and the job fails for good
saying so (DLQ), for an operator to check the relay's log for that Message-ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any, Literal

import aiosmtplib
from aiosmtplib.typing import Default
from bullmq import UnrecoverableError
from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateError
from sqlalchemy import update
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from bridge.errors import MalformedJobError, RetryLater
from bridge.job import Job
from bridge.specs import QueueSpec
from bridge.tracing import client_span
from mail.view import template_view
from orderflow.contracts.mail import TEMPLATE_ALIASES, EmailJob, MailDeliveryStatus
from orderflow.db import MailDelivery
from orderflow.errors import OrderflowError
from orderflow.settings import Settings
from orderflow.templating import is_html_template

TEMPLATES = Path(__file__).parent / "templates"
SMTP_TIMEOUT_SECONDS = 10.0  # one SMTP conversation; the job timeout bounds the whole attempt
# A claim older than this belongs to an attempt that died inside the SMTP conversation
CLAIM_STALE_SECONDS = 3 * SMTP_TIMEOUT_SECONDS
# A mail handed to the relay without an answer is not sent again for this long: every automatic
# retry comes sooner; an operator who re-drives the job after it, having checked the relay's
# log, resends it
UNKNOWN_HOLD_SECONDS = 3600.0
_NOT_ATOM = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]")


@dataclass(frozen=True)
class RenderedEmail:
    """A mail ready to send."""

    to: str
    subject: str
    text: str
    html: str
    message_id: str
    template: str = ""
    digest: str = ""


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


def content_digest(data: Any) -> str:
    """SHA-256 of a job's data as canonical JSON (keys sorted): its recipient, template, fields."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def message_id_for(queue: str, job_id: str, data: Any) -> str:
    """A Message-ID fixed by the job's identity and content.

    Every attempt of one job sends the same mail; a job id handed out again for another mail
    (another recipient, template or data) gets another Message-ID, so it is sent.
    """
    key = f"{queue}\0{job_id}\0{content_digest(data)}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    readable = _NOT_ATOM.sub("-", job_id)[:64].strip(".") or "job"
    return f"<{readable}.{digest}@{queue}.orderflow>"


class MailOutcomeUnknownError(UnrecoverableError, OrderflowError):
    """The relay was handed the mail and never answered: it is not sent again automatically."""

    def __init__(self, job: Job, message_id: str, to: str, detail: str, since: datetime) -> None:
        until = since + timedelta(seconds=UNKNOWN_HOLD_SECONDS)
        super().__init__(
            f"{job.queue}: job {job.id!r} ({job.name}): outcome unknown for {message_id} to"
            f" {to}: {detail}; not sent again before {until:%Y-%m-%d %H:%M:%S} UTC: check the"
            " relay's log for this Message-ID, and re-drive the job after that time to resend it"
        )
        self.job_id, self.message_id = job.id, message_id


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


@dataclass(frozen=True)
class Claim:
    """What `DeliveryLog.claim` found: None (this attempt sends), SENT, SENDING or UNKNOWN."""

    status: MailDeliveryStatus | None
    detail: str = ""  # why UNKNOWN
    since: datetime | None = None  # when the UNKNOWN mail was handed over


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)  # SQLite: naive


class DeliveryLog:
    """The `maildelivery` table: one row per mail, claimed before sending, SENT once accepted,
    UNKNOWN when it was handed over and no answer came."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def claim(self, mail: RenderedEmail, job: Job) -> Claim:
        """Claim the mail for this attempt (status None), or say why not."""
        now = datetime.now(UTC)
        with Session(self.engine) as session:
            row = session.get(MailDelivery, mail.message_id)
            if row is None:
                session.add(
                    MailDelivery(
                        message_id=mail.message_id, queue=job.queue, job_id=job.id,
                        recipient=mail.to, template=mail.template, digest=mail.digest,
                    )
                )  # fmt: skip
                try:
                    session.commit()
                except IntegrityError:  # a concurrent attempt claimed it first
                    return Claim(MailDeliveryStatus.SENDING)
                return Claim(None)
            if row.status == MailDeliveryStatus.SENT:
                return Claim(MailDeliveryStatus.SENT)
            if row.status == MailDeliveryStatus.UNKNOWN:
                since = _aware(row.data_at or row.claimed_at)
                if now - since < timedelta(seconds=UNKNOWN_HOLD_SECONDS):
                    return Claim(MailDeliveryStatus.UNKNOWN, row.detail or "", since)
                return self._take_over(session, row, now)  # an operator's late re-drive
            if now - _aware(row.claimed_at) < timedelta(seconds=CLAIM_STALE_SECONDS):
                return Claim(MailDeliveryStatus.SENDING)
            if row.data_at is not None:  # that attempt died after handing the message over
                since = _aware(row.data_at)
                detail = f"the attempt that handed it over at {since:%H:%M:%S} UTC never finished"
                row.status, row.detail = MailDeliveryStatus.UNKNOWN, detail
                session.add(row)
                session.commit()
                return Claim(MailDeliveryStatus.UNKNOWN, detail, since)
            return self._take_over(session, row, now)  # that attempt died before DATA

    def _take_over(self, session: Session, row: MailDelivery, now: datetime) -> Claim:
        """Claim a row another attempt left, unless a third took it first."""
        taken: CursorResult[Any] = session.execute(  # type: ignore[assignment]
            update(MailDelivery)
            .where(
                MailDelivery.message_id == row.message_id,  # type: ignore[arg-type]
                MailDelivery.attempts == row.attempts,  # type: ignore[arg-type]
                MailDelivery.status == row.status,  # type: ignore[arg-type]
            )
            .values(
                status=MailDeliveryStatus.SENDING, claimed_at=now, attempts=row.attempts + 1,
                data_at=None,
            )
        )  # fmt: skip
        session.commit()
        return Claim(None) if taken.rowcount == 1 else Claim(MailDeliveryStatus.SENDING)

    def _set(self, message_id: str, **values: Any) -> None:
        with Session(self.engine) as session:
            row = session.get(MailDelivery, message_id)
            if row is not None and row.status != MailDeliveryStatus.SENT:
                for name, value in values.items():
                    setattr(row, name, value)
                session.add(row)
                session.commit()

    def handed_over(self, message_id: str) -> None:
        """The message is about to be handed to the relay (DATA): a lost reply leaves it UNKNOWN."""
        self._set(message_id, data_at=datetime.now(UTC))

    def sent(self, message_id: str) -> None:
        """The relay accepted the mail."""
        self._set(message_id, status=MailDeliveryStatus.SENT, sent_at=datetime.now(UTC))

    def unknown(self, message_id: str, detail: str) -> None:
        """The relay was handed the mail and its answer never came."""
        self._set(message_id, status=MailDeliveryStatus.UNKNOWN, detail=detail)

    def release(self, message_id: str) -> None:
        """The relay did not take the mail: the next attempt may send it at once."""
        with Session(self.engine) as session:
            row = session.get(MailDelivery, message_id)
            if row is not None and row.status == MailDeliveryStatus.SENDING:
                session.delete(row)
                session.commit()

    def status(self, message_id: str) -> MailDeliveryStatus | None:
        """The record's status, None if there is none."""
        with Session(self.engine) as session:
            row = session.get(MailDelivery, message_id)
            return MailDeliveryStatus(row.status) if row is not None else None


class _Conversation(aiosmtplib.SMTP):
    """An SMTP client that records the moment the message is handed over (DATA), before it is."""

    def __init__(self, on_data: Callable[[], Awaitable[None]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_data = on_data
        self.handed_over = False

    async def data(
        self,
        message: str | bytes,
        /,
        *,
        timeout: float | Literal[Default.token] | None = Default.token,
    ) -> aiosmtplib.SMTPResponse:
        """DATA: from here on a failure that is not the relay's answer leaves the mail UNKNOWN."""
        await self.on_data()
        self.handed_over = True
        return await super().data(message, timeout=timeout)


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
            message_id=message_id_for(job.queue, job.id, job.data),
            template=name,
            digest=content_digest(job.data),
        )

    async def __call__(self, job: Job) -> dict[str, Any]:
        """Send the job's mail unless an earlier attempt already did; returns the Message-ID."""
        mail = self.render(job)
        claim = await asyncio.to_thread(self.deliveries.claim, mail, job)
        if claim.status is MailDeliveryStatus.SENT:
            return {"sent": True, "messageId": mail.message_id, "duplicate": True}
        if claim.status is MailDeliveryStatus.SENDING:
            # the other attempt finishes, or its claim goes stale (its worker died mid-SMTP):
            # wait without using up this job's attempts
            raise RetryLater(
                int(CLAIM_STALE_SECONDS * 1000 / 4),
                f"{job.queue}: job {job.id!r} ({job.name}): another attempt is sending"
                f" {mail.message_id} right now; retrying later",
            )
        if claim.status is MailDeliveryStatus.UNKNOWN:
            assert claim.since is not None
            raise MailOutcomeUnknownError(job, mail.message_id, mail.to, claim.detail, claim.since)
        message = EmailMessage()
        message["From"] = self.settings.mail_from
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = mail.message_id
        message["X-Orderflow-Job"] = f"{job.queue}/{job.name}/{job.id}"
        message.set_content(mail.text)
        message.add_alternative(mail.html, subtype="html")
        await self._send(job, mail, message)
        await asyncio.to_thread(self.deliveries.sent, mail.message_id)
        return {"sent": True, "messageId": mail.message_id}

    async def _send(self, job: Job, mail: RenderedEmail, message: EmailMessage) -> None:
        """One SMTP conversation; a failure says whether the relay may have the mail."""
        host, port = self.settings.smtp_host, self.settings.smtp_port

        async def handing_over() -> None:
            await asyncio.to_thread(self.deliveries.handed_over, mail.message_id)

        smtp = _Conversation(handing_over, hostname=host, port=port, timeout=SMTP_TIMEOUT_SECONDS)
        accepted = False
        try:
            with client_span("smtp send", **{"server.address": host}):
                await smtp.connect()
                await smtp.send_message(message)
            accepted = True
        except BaseException as err:
            if smtp.handed_over and not isinstance(err, aiosmtplib.SMTPResponseException):
                # no answer (timeout, dropped connection, cancelled): the relay may have it
                detail = f"no reply to DATA from {host}:{port} ({type(err).__name__}: {err})"
                await asyncio.shield(
                    asyncio.to_thread(self.deliveries.unknown, mail.message_id, detail)
                )
                if isinstance(err, asyncio.CancelledError):
                    raise  # the next attempt finds it UNKNOWN and says why
                since = datetime.now(UTC)
                raise MailOutcomeUnknownError(job, mail.message_id, mail.to, detail, since) from err
            await asyncio.shield(asyncio.to_thread(self.deliveries.release, mail.message_id))
            if isinstance(err, aiosmtplib.SMTPResponseException) and 500 <= err.code < 600:
                # a permanent refusal: retrying cannot help
                raise UnrecoverableError(
                    f"{job.queue}: job {job.id!r} ({job.name}): SMTP refused {mail.to}: {err}"
                ) from err
            raise
        finally:
            if accepted:
                with contextlib.suppress(Exception):  # taken already: a failed QUIT changes nothing
                    await smtp.quit()
            smtp.close()
