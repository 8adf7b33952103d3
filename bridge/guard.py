"""The payload guard: job data is stored in clear text, so refuse secrets and large blobs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bridge.errors import PayloadRejectedError

# Field names (lower-cased, separators dropped) that carry secrets wherever they appear in a name
SENSITIVE_PARTS = (
    "password", "passwd", "passphrase", "secret", "token", "apikey", "accesskey",
    "privatekey", "cardnumber", "cardno", "creditcard", "debitcard", "cvv", "cvc",
    "securitycode", "iban", "accountnumber",
)  # fmt: skip
# Short names that are secrets only as the whole field name ("pin" is inside "shipping")
SENSITIVE_NAMES = frozenset({"pin", "pan", "ssn", "otp", "cvv2", "authorization", "cookie"})
_SEPARATORS = re.compile(r"[^a-z0-9]")
# A fast screen over the whole encoded payload: only a hit (or an escape) needs the field walk
_SCREEN_DROP = re.compile(r'[^a-z0-9"\\]')
_SCREEN = re.compile("|".join([*SENSITIVE_PARTS, *(f'"{name}"' for name in SENSITIVE_NAMES)]))


def sensitive_field(name: str) -> bool:
    """True if a field with this name would carry a secret (password, token, card number ...)."""
    key = _SEPARATORS.sub("", name.lower())
    return key in SENSITIVE_NAMES or any(part in key for part in SENSITIVE_PARTS)


def _walk(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}"
            if sensitive_field(str(key)):
                yield here
            yield from _walk(item, here)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]")


@dataclass(frozen=True)
class PayloadGuard:
    """Checks one job's data before it is enqueued."""

    queue: str
    max_bytes: int

    def check(self, name: str, job_id: str | None, data: Any, encoded: str) -> None:
        """Raise PayloadRejectedError if `data` has a sensitive field or `encoded` is too large."""
        size = len(encoded.encode())
        if size > self.max_bytes:
            raise PayloadRejectedError(
                self.queue, name, job_id,
                f"data is {size} bytes, over the {self.max_bytes}-byte limit;"
                " store large data in the database and pass its id",
            )  # fmt: skip
        screened = _SCREEN_DROP.sub("", encoded.lower())
        if "\\" not in screened and not _SCREEN.search(screened):
            return
        found = next(_walk(data, "data"), None)
        if found is not None:
            raise PayloadRejectedError(
                self.queue, name, job_id,
                f"{found} looks sensitive (passwords, tokens, secrets and card data"
                " must not be stored in Redis in clear text)",
            )  # fmt: skip
