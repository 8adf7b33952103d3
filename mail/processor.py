"""The email queue's processor: render the job's template (HTML + text) and hand it to SMTP once."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiosmtplib
from bullmq import UnrecoverableError
from jinja2 import Environment, FileSystemLoader, TemplateError

from bridge.errors import MalformedJobError
from bridge.job import Job
from bridge.redis_client import RedisClient
from bridge.specs import QueueSpec
from bridge.tracing import client_span
from orderflow.contracts.mail import TEMPLATE_ALIASES, EmailJob
from orderflow.settings import Settings
from orderflow.templating import is_html_template

TEMPLATES = Path(__file__).parent / "templates"
DELIVERED_TTL_SECONDS = 7 * 86400  # longer than any retry or stalled-job recovery of a mail job
SMTP_TIMEOUT_SECONDS = 10.0  # one SMTP conversation; the job timeout bounds the whole attempt
_NOT_ATOM = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]")


@dataclass(frozen=True)
class RenderedEmail:
    """A mail ready to send."""

    to: str
    subject: str
    text: str
    html: str
    message_id: str


def money(amount: Any, currency: Any = "") -> str:
    """An amount as mails show it: `999.50 INR` (a filter, so the calling template escapes it)."""
    return f"{float(amount):.2f} {currency or ''}"


def template_environment() -> Environment:
    """Jinja2 environment for the mail templates; HTML templates are autoescaped."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=is_html_template,
        keep_trailing_newline=True,
    )
    env.filters["money"] = money
    return env


def message_id_for(queue: str, job_id: str) -> str:
    """A Message-ID fixed by the job id, so every attempt of one job sends the same mail."""
    digest = hashlib.sha256(f"{queue}\0{job_id}".encode()).hexdigest()[:16]
    readable = _NOT_ATOM.sub("-", job_id)[:64].strip(".") or "job"
    return f"<{readable}.{digest}@{queue}.orderflow>"


def template_for(job: Job) -> str:
    """The template (a job name) for this job: data.template (either naming), else the job's name."""
    wanted = job.data.get("template") or job.name
    name = TEMPLATE_ALIASES.get(wanted, wanted)
    if name not in set(EmailJob):
        raise MalformedJobError(job.queue, job.name, job.id, f"unknown template {wanted!r}")
    return str(name)


def check_email_job(job: Job) -> None:
    """Refuse data that is not `{to, subject, template?, data?}` (seed's email job shape)."""
    data = job.data
    if not isinstance(data, dict):
        raise MalformedJobError(job.queue, job.name, job.id, "data is not an object")
    to = data.get("to")
    if not isinstance(to, str) or "@" not in to or "\n" in to or "\r" in to:
        raise MalformedJobError(job.queue, job.name, job.id, f"bad recipient {to!r}")
    subject = data.get("subject")
    if not isinstance(subject, str) or not subject.strip() or "\n" in subject:
        raise MalformedJobError(job.queue, job.name, job.id, f"bad subject {subject!r}")
    if not isinstance(data.get("data", {}), dict):
        raise MalformedJobError(job.queue, job.name, job.id, "data.data is not an object")


class EmailProcessor:
    """Processor of the email queue; delivery is recorded so a retried job does not mail twice."""

    def __init__(self, settings: Settings, spec: QueueSpec, client: RedisClient) -> None:
        self.settings = settings
        self.spec = spec
        self.client = client
        self.env = template_environment()

    def render(self, job: Job) -> RenderedEmail:
        """Render the job's mail (HTML and plain text) without sending it."""
        check_email_job(job)
        name = template_for(job)
        context: dict[str, Any] = {
            "to": job.data["to"],
            "subject": job.data["subject"],
            "data": job.data.get("data") or {},
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

    def _delivered_key(self, job: Job) -> str:
        return f"{self.spec.prefix}:{self.spec.name}:orderflow-delivered:{job.id}"

    async def __call__(self, job: Job) -> dict[str, Any]:
        """Send the job's mail unless an earlier attempt already did; returns the Message-ID."""
        mail = self.render(job)
        key = self._delivered_key(job)
        if await self.client.execute("EXISTS", key):
            return {"sent": True, "messageId": mail.message_id, "duplicate": True}
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
        except aiosmtplib.SMTPResponseException as err:
            if 500 <= err.code < 600:  # a permanent refusal: retrying cannot help
                raise UnrecoverableError(
                    f"{job.queue}: job {job.id!r} ({job.name}): SMTP refused {mail.to}: {err}"
                ) from err
            raise
        await self.client.execute("SET", key, mail.message_id, "EX", DELIVERED_TTL_SECONDS)
        return {"sent": True, "messageId": mail.message_id}
