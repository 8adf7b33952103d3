"""A local SMTP sink (aiosmtpd) that keeps every message as an .eml file plus a readable index.

Folder layout: `<folder>/<n>-<slug>.eml`, `index.jsonl` (one JSON object per message) and
`index.txt` (one line per message). A message whose Message-ID was seen before is kept too
but marked as a duplicate, as a mailbox would collapse it.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from orderflow.settings import Settings

_SLUG = re.compile(r"[^a-z0-9]+")


def mail_dir(settings: Settings) -> Path:
    """Where the embedded sink keeps messages."""
    return settings.data_dir / "mail"


@dataclass(frozen=True)
class StoredMail:
    """One received message as the index describes it; body parts are read from its file."""

    seq: int
    message_id: str
    mail_from: str
    to: list[str]
    subject: str
    received_at: str
    path: Path
    duplicate: bool

    def message(self) -> EmailMessage:
        """The parsed message."""
        msg = message_from_bytes(self.path.read_bytes(), policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return msg

    def _part(self, subtype: str) -> str:
        part = self.message().get_body(preferencelist=(subtype,))
        return "" if part is None else str(part.get_content())

    @property
    def text(self) -> str:
        """The plain-text body."""
        return self._part("plain")

    @property
    def html(self) -> str:
        """The HTML body."""
        return self._part("html")

    def header(self, name: str) -> str:
        """One header's value ('' if absent)."""
        return str(self.message().get(name, "")).strip()


class MailStore:
    """Reads what a sink stored in a folder (used by tests and by people)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def deliveries(self) -> list[StoredMail]:
        """Every message received, duplicates included, in arrival order."""
        index = self.folder / "index.jsonl"
        if not index.exists():
            return []
        found = []
        for line in index.read_text().splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue  # a line being written right now
            found.append(
                StoredMail(
                    seq=e["seq"],
                    message_id=e["message_id"],
                    mail_from=e["from"],
                    to=e["to"],
                    subject=e["subject"],
                    received_at=e["received_at"],
                    path=self.folder / e["file"],
                    duplicate=e["duplicate"],
                )
            )
        return found

    def messages(self, *, to: str | None = None, subject: str | None = None) -> list[StoredMail]:
        """Distinct messages (by Message-ID), optionally to one address / with subject text."""
        return [
            m
            for m in self.deliveries()
            if not m.duplicate
            and (to is None or to in m.to)
            and (subject is None or subject in m.subject)
        ]

    async def wait_for(
        self, count: int = 1, within: float = 10.0, **filters: Any
    ) -> list[StoredMail]:
        """Wait until at least `count` matching messages arrived; returns them (maybe fewer)."""
        deadline = time.monotonic() + within
        while True:
            found = self.messages(**filters)
            if len(found) >= count or time.monotonic() >= deadline:
                return found
            await asyncio.sleep(0.05)


class _Handler:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.lock = threading.Lock()
        self.seen: set[str] = set()
        self.seq = 0
        for mail in MailStore(folder).deliveries():
            self.seen.add(mail.message_id)
            self.seq = max(self.seq, mail.seq)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        msg = message_from_bytes(data, policy=policy.default)
        with self.lock:
            self.seq += 1
            message_id = str(msg.get("Message-ID", "")).strip() or f"<sink-{self.seq}@local>"
            duplicate = message_id in self.seen
            self.seen.add(message_id)
            subject = str(msg.get("Subject", ""))
            slug = _SLUG.sub("-", subject.lower()).strip("-")[:40] or "message"
            name = f"{self.seq:06d}-{slug}{'-duplicate' if duplicate else ''}.eml"
            tmp = self.folder / (name + ".tmp")
            tmp.write_bytes(data)
            tmp.rename(self.folder / name)
            now = datetime.now(UTC).isoformat(timespec="milliseconds")
            entry = {
                "seq": self.seq, "message_id": message_id, "from": envelope.mail_from,
                "to": list(envelope.rcpt_tos), "subject": subject, "received_at": now,
                "file": name, "duplicate": duplicate,
            }  # fmt: skip
            with (self.folder / "index.jsonl").open("a") as f:
                f.write(json.dumps(entry) + "\n")
            with (self.folder / "index.txt").open("a") as f:
                mark = "  (duplicate)" if duplicate else ""
                f.write(f"{now}  {', '.join(entry['to'])}  {subject}  {name}{mark}\n")
        return "250 Message accepted for delivery"


class SmtpSink:
    """The sink server on host:port, writing into `folder` (runs in its own thread)."""

    def __init__(self, folder: Path, host: str = "127.0.0.1", port: int = 8025) -> None:
        self.folder = folder
        self.host, self.port = host, port
        self.store = MailStore(folder)
        self._controller: Controller | None = None

    def start(self) -> SmtpSink:
        """Start listening; returns self."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._controller = Controller(
            _Handler(self.folder), hostname=self.host, port=self.port, ready_timeout=10
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop listening (the stored messages stay)."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def start_smtp_sink(settings: Settings) -> SmtpSink:
    """Start the embedded sink on settings.smtp_host:smtp_port, keeping mail in data_dir/mail."""
    return SmtpSink(mail_dir(settings), settings.smtp_host, settings.smtp_port).start()


def stop_smtp_sink(sink: SmtpSink) -> None:
    """Stop a sink started by start_smtp_sink."""
    sink.stop()
