"""Every payload of a raw history, and what of it is in clear (tests/test_codec.py, the
encrypted goldens in tests/test_replay.py).

A raw history is one fetched by a client without the codec, or loaded from a golden file.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowHistory

from orderflow import codec


@dataclass(frozen=True)
class Found:
    """A payload of a raw history, where it sits (proto field names from the event down)."""

    path: str
    payload: Payload

    @property
    def key_id(self) -> str:
        """The key id it names ('' for a payload in clear)."""
        return self.payload.metadata.get(codec.KEY_ID_METADATA, b"").decode()

    @property
    def encrypted(self) -> bool:
        """Sealed by the codec, with a key id."""
        return self.payload.metadata.get("encoding") == codec.ENCODING and bool(self.key_id)


def _children(message: Message) -> Iterator[tuple[str, Any]]:
    """(field name, value) of every set field, maps and lists flattened."""
    for field, value in message.ListFields():
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            for key, item in value.items():
                yield f"{field.name}[{key}]", key
                yield f"{field.name}[{key}]", item
        elif field.is_repeated:
            for index, item in enumerate(value):
                yield f"{field.name}[{index}]", item
        else:
            yield field.name, value


def walk(message: Message, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every Payload (not descended into) and every str or bytes value, with its path."""
    if isinstance(message, Payload):
        yield path, message
        return
    for name, value in _children(message):
        here = f"{path}.{name}" if path else name
        if isinstance(value, Message):
            yield from walk(value, here)
        elif isinstance(value, str | bytes):
            yield here, value


def payloads(history: WorkflowHistory) -> list[Found]:
    """Every payload of every event, search attributes included."""
    return [
        Found(f"event {event.event_id}.{path}", value)
        for event in history.events
        for path, value in walk(event)
        if isinstance(value, Payload)
    ]


# what stays in clear by design: the search attributes (CustomerId a keyed hash), and the SDK
# core's own marker bookkeeping, written after the codec: a patch's id, a local activity's
# type, attempt and times (its result is a payload of the codec's, sealed)
CLEAR_SEARCH_ATTRIBUTES = {"OrderStatus", "OrderTotal", "CustomerId", "TemporalChangeVersion"}
CLEAR_MARKER_FIELDS = {
    "patch-data": {"id", "deprecated"},
    "data": {"seq", "attempt", "activity_id", "activity_type", "complete_time", "backoff",
             "original_schedule_time", "activation_index"},
}  # fmt: skip


def _clear_by_design(found: Found) -> bool:
    for name in CLEAR_SEARCH_ATTRIBUTES:
        if f".search_attributes.indexed_fields[{name}]" in found.path:
            value = json.loads(found.payload.data)
            return name != "CustomerId" or str(value).startswith("c_")
    for detail, fields in CLEAR_MARKER_FIELDS.items():
        if f".marker_recorded_event_attributes.details[{detail}]." in found.path:
            value = json.loads(found.payload.data)
            return isinstance(value, dict) and set(value) <= fields
    return False


def cleartext_payloads(history: WorkflowHistory) -> list[str]:
    """Where a payload is in clear that the codec should have sealed (see CLEAR_*)."""
    return [
        f"{f.path}: {f.payload.data[:200]!r}"
        for f in payloads(history)
        if not f.encrypted and not _clear_by_design(f)
    ]


def leaks(history: WorkflowHistory, needles: Sequence[str]) -> list[str]:
    """Where any needle occurs in clear in a raw history: a string, bytes, a payload's data or
    metadata, or one of them base64-encoded (as JSON output shows bytes)."""
    forms = {needle: (needle.encode(), base64.b64encode(needle.encode())) for needle in needles}
    found = []
    for event in history.events:
        for path, value in walk(event):
            blobs = (
                [value.data, *value.metadata.values(), *value.metadata.keys()]
                if isinstance(value, Payload)
                else [value]
            )
            for blob in blobs:
                data = blob.encode() if isinstance(blob, str) else blob
                for needle, encoded in forms.items():
                    if any(form in data for form in encoded):
                        found.append(f"{needle!r} at event {event.event_id}.{path}")
    return found
