"""The payload guard: job data is stored in clear text, so refuse secrets and large blobs.

Field names are screened everywhere (password, token, card number ...). Values are screened
only in free text: a Luhn-valid card number, a URL carrying a token (a reset link) or
credentials, a JWT. The fields a producer generates itself (ids, SKUs, amounts, tracking
numbers: the queue spec's `system_fields`) are not: one generated number in ten passes Luhn,
and refusing it refused real orders' mail and real payments. The error names the field and what
it looked like, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bridge.errors import PayloadRejectedError, shown

# Field names (lower-cased, separators dropped) that carry secrets wherever they appear in a name
SENSITIVE_PARTS = (
    "password", "passwd", "passphrase", "passcode", "secret", "token", "apikey", "accesskey",
    "privatekey", "cardnumber", "cardno", "creditcard", "debitcard", "cvv", "cvc",
    "securitycode", "verificationcode", "onetimecode", "onetimepassword", "otpcode",
    "iban", "accountnumber",
)  # fmt: skip
# Short names that are secrets only as the whole field name ("pin" is inside "shipping",
# "otp" inside "footprint")
SENSITIVE_NAMES = frozenset(
    {"pin", "pan", "ssn", "otp", "totp", "mfacode", "cvv2", "authorization", "cookie"}
)
# Query parameters that make a URL a credential (besides every sensitive field name)
URL_SECRET_PARAMS = frozenset(
    {"code", "key", "sig", "signature", "auth", "session", "sessionid", "sid", "jwt", "hash",
     "reset", "ticket", "nonce", "otp"}
)  # fmt: skip
URL_SECRET_SUFFIXES = ("signature", "sig", "credential", "key", "auth")  # X-Amz-Signature, api_key
# Path words of links whose long random segment is the credential (/reset/9f8a7c...)
LINK_WORDS = ("reset", "verify", "confirm", "activate", "magic", "login", "invite", "unsubscribe")
TOKEN_SEGMENT_MIN = 16  # a random path segment this long (letters and digits) is a bearer token
CARD_DIGITS = (13, 19)  # ISO/IEC 7812 card numbers: 13 to 19 digits
CARD_FIRST_DIGITS = "23456"  # Mastercard 2/5, Amex/Diners/JCB 3, Visa 4, Discover/UnionPay 6

_SEPARATORS = re.compile(r"[^a-z0-9]")
# A fast screen over the whole encoded payload: only a hit (or an escape) needs the field walk
_SCREEN_DROP = re.compile(r'[^a-z0-9"\\]')
_SCREEN = re.compile("|".join([*SENSITIVE_PARTS, *(f'"{name}"' for name in SENSITIVE_NAMES)]))
_VALUE_SCREEN = re.compile(r"\d(?:[ -]?\d){12}|://|eyj[a-z0-9_-]{6,}\.")
# a digit run standing alone: inside an id (evt_95f2a268893744...) it is part of a token
_CARD = re.compile(r"(?<![A-Za-z0-9_])\d(?:[ -]?\d){12,18}(?![A-Za-z0-9_])")
_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s\"'<>]+", re.IGNORECASE)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.")
_TOKEN_SEGMENT = re.compile(rf"^(?=.*[a-zA-Z])(?=.*\d)[A-Za-z0-9_-]{{{TOKEN_SEGMENT_MIN},}}$")


def sensitive_field(name: str) -> bool:
    """True if a field with this name would carry a secret (password, token, card number ...)."""
    key = _SEPARATORS.sub("", name.lower())
    return key in SENSITIVE_NAMES or any(part in key for part in SENSITIVE_PARTS)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_number_in(text: str) -> bool:
    """True if `text` holds a Luhn-valid 13-19 digit run (spaces or dashes between digits)."""
    for match in _CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        low, high = CARD_DIGITS
        if low <= len(digits) <= high and digits[0] in CARD_FIRST_DIGITS and luhn_valid(digits):
            return True
    return False


def credential_url_in(text: str) -> str:
    """What makes a URL in `text` a credential ("" if none): a token parameter, a password..."""
    for match in _URL.finditer(text):
        try:
            url = urlsplit(match.group())
            password = url.password
        except ValueError:
            return "a URL that cannot be parsed"
        if password:
            return "a URL with a password in it"
        for key, _ in parse_qsl(url.query + "&" + url.fragment, keep_blank_values=True):
            bare = _SEPARATORS.sub("", key.lower())
            if (
                sensitive_field(key)
                or bare in URL_SECRET_PARAMS
                or bare.endswith(URL_SECRET_SUFFIXES)
            ):
                return f"a URL carrying a {key!r} parameter"
        path = url.path.lower()
        if any(word in path for word in LINK_WORDS):
            if any(_TOKEN_SEGMENT.match(segment) for segment in url.path.split("/")):
                return "a link carrying a token in its path"
    return ""


def _value_problem(text: str) -> str:
    if card_number_in(text):
        return "a card number (a Luhn-valid digit run)"
    if why := credential_url_in(text):
        return why
    if _JWT.search(text):
        return "a JSON Web Token"
    return ""


def field_pattern(path: str, key: str) -> str:
    """The system-field pattern of `key` under `path` ("data.items[]" + "sku")."""
    return f"{path}.{key}" if path else key


def _walk(
    value: Any, path: str, pattern: str, system: frozenset[str], generated: bool = False
) -> Iterator[tuple[str, str]]:
    """(field, why) of each sensitive field; `pattern` is the path with every index as []."""
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{shown(str(key))}"
            like = field_pattern(pattern, str(key))
            if sensitive_field(str(key)):
                yield here, "its name says it holds a secret"
            elif why := _value_problem(str(key)):
                yield f"{path} (a key)", f"the key looks like {why}"
            yield from _walk(item, here, like, system, generated or like in system)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]", f"{pattern}[]", system, generated)
    elif isinstance(value, str | int) and not isinstance(value, bool) and not generated:
        if why := _value_problem(str(value)):
            yield path, f"its value looks like {why}"


@dataclass(frozen=True)
class PayloadGuard:
    """Checks one job's data before it is enqueued."""

    queue: str
    max_bytes: int
    # fields the producer generates ("data.items[].sku"): screened by name, not by value
    system_fields: frozenset[str] = field(default_factory=frozenset)

    def check(self, name: str, job_id: str | None, data: Any, encoded: str) -> None:
        """Raise PayloadRejectedError if `data` holds a secret or `encoded` is too large."""
        size = len(encoded.encode())
        if size > self.max_bytes:
            raise PayloadRejectedError(
                self.queue, name, job_id,
                f"data is {size} bytes, over the {self.max_bytes}-byte limit;"
                " store large data in the database and pass its id",
            )  # fmt: skip
        lowered = encoded.lower()
        screened = _SCREEN_DROP.sub("", lowered)
        if "\\" not in screened and not _SCREEN.search(screened):
            if not _VALUE_SCREEN.search(lowered):
                return
        found = next(_walk(data, "data", "", self.system_fields), None)
        if found is not None:
            where, why = found
            raise PayloadRejectedError(
                self.queue, name, job_id,
                f"{where} looks sensitive: {why} (passwords, tokens, secrets and card data"
                " must not be stored in Redis in clear text; pass an id and look it up)",
                field=where, problem=why,
            )  # fmt: skip
