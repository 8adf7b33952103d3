"""Customer data encrypted in Temporal: an AES-256-GCM payload codec with keys that rotate.

Every payload a worker, a client or the CLI sends to Temporal (inputs, results, signals,
updates, queries, memos, failures' details) is encrypted before it leaves the process. An
encrypted payload has the encoding `binary/encrypted`, names its key id in the metadata
`encryption-key-id` and holds `nonce (12 bytes) || ciphertext || tag` of the serialized inner
payload, with the key id as associated data (a payload cannot be relabelled to another key).
The Node client (`clients/node/codec.js`) writes and reads the same format.

Keys: `ORDERFLOW_CODEC_KEY` is the current one (`<id>:<base64 of 32 bytes>`), which encrypts;
`ORDERFLOW_CODEC_OLD_KEYS` (comma-separated, same shape) still decrypt. A local start
(`make run`) without a key makes one under the data folder on first start and keeps it; a
production-shaped start refuses to run without one (`Settings.insecure_secrets`).

What stays in clear: search attributes (`OrderStatus`, `OrderTotal`, and `CustomerId`, which is
a keyed hash, `customer_hash`), workflow ids and types, task queues, timers. Ids must therefore
not be personal data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import temporalio.converter
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure

from orderflow.errors import OrderflowError

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
NONCE_BYTES = 12
KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
LOCAL_KEY_FILE = "codec-key"  # under the data folder, made by a local start


class CodecKeyError(OrderflowError):
    """A codec key setting is malformed, or a payload names a key this process does not have."""


@dataclass(frozen=True)
class CodecKey:
    """One AES-256 key and the id written beside every payload it encrypts."""

    key_id: str
    secret: bytes

    def __repr__(self) -> str:  # never the secret, not even in a traceback
        return f"CodecKey({self.key_id!r})"

    def spec(self) -> str:
        """The setting's form, `<id>:<base64>`."""
        return f"{self.key_id}:{base64.b64encode(self.secret).decode()}"


def new_key(key_id: str) -> CodecKey:
    """A fresh random key with this id."""
    return CodecKey(_checked_id(key_id, "a new key"), AESGCM.generate_key(bit_length=256))


def parse_key(spec: str, setting: str) -> CodecKey:
    """A key from its setting's form; the error names the setting, never the value."""
    key_id, sep, encoded = spec.strip().partition(":")
    if not sep:
        raise CodecKeyError(f"{setting}: a key is <id>:<base64 of 32 bytes>; no ':' found")
    key_id = _checked_id(key_id, setting)
    try:
        secret = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise CodecKeyError(f"{setting}: key {key_id!r} is not valid base64") from None
    if len(secret) != 32:
        raise CodecKeyError(
            f"{setting}: key {key_id!r} is {len(secret)} bytes; AES-256 needs 32"
            " (`orderflow codec new-key` makes one)"
        )
    return CodecKey(key_id, secret)


def _checked_id(key_id: str, setting: str) -> str:
    if not KEY_ID.fullmatch(key_id):
        raise CodecKeyError(
            f"{setting}: a key id is 1-64 of A-Z a-z 0-9 _ . - (got {len(key_id)} characters)"
        )
    return key_id


class Keyring:
    """The current key (which encrypts) and every key that still decrypts, by id."""

    def __init__(self, current: CodecKey, old: Iterable[CodecKey] = ()) -> None:
        self.current = current
        self.keys: dict[str, CodecKey] = {}
        for key in (current, *old):
            known = self.keys.get(key.key_id)
            if known is not None and known.secret != key.secret:
                raise CodecKeyError(f"two different codec keys share the id {key.key_id!r}")
            self.keys[key.key_id] = key
        self._ciphers = {kid: AESGCM(key.secret) for kid, key in self.keys.items()}

    @property
    def ids(self) -> list[str]:
        """Every key id, the current one first."""
        return [self.current.key_id, *(k for k in self.keys if k != self.current.key_id)]

    def encrypt(self, plain: bytes) -> tuple[str, bytes]:
        """The current key's id and `nonce || ciphertext || tag` of `plain`."""
        kid = self.current.key_id
        nonce = os.urandom(NONCE_BYTES)
        return kid, nonce + self._ciphers[kid].encrypt(nonce, plain, kid.encode())

    def decrypt(self, key_id: str, sealed: bytes) -> bytes:
        """`plain` back; a clear error naming the key id when it is unknown or does not fit."""
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise CodecKeyError(
                f"payload encrypted with codec key {key_id!r}, which this process does not have"
                f" (it has {', '.join(repr(k) for k in self.ids)}): add it to"
                " ORDERFLOW_CODEC_OLD_KEYS"
            )
        try:
            return cipher.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], key_id.encode())
        except Exception:  # InvalidTag: a wrong key under this id, or a damaged payload
            raise CodecKeyError(
                f"payload under codec key {key_id!r} does not decrypt: the key with that id"
                " differs from the one that wrote it, or the payload is damaged"
            ) from None


class EncryptionCodec(temporalio.converter.PayloadCodec):
    """Encrypts every payload with the current key; decrypts with the key each one names.

    A payload that is not encrypted (written before the codec, or by a peer without it) is
    passed through on decode, so histories from before the switch still replay.
    """

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encode_one(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decode_one(p) for p in payloads]

    def encode_one(self, payload: Payload) -> Payload:
        """One payload sealed under the current key."""
        key_id, sealed = self.keyring.encrypt(payload.SerializeToString())
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id.encode()}, data=sealed
        )

    def decode_one(self, payload: Payload) -> Payload:
        """One payload opened (or passed through if it was never encrypted)."""
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
        inner = Payload()
        inner.ParseFromString(self.keyring.decrypt(key_id, payload.data))
        return inner


class FailureConverter(temporalio.converter.DefaultFailureConverterWithEncodedAttributes):
    """Failures' messages and stack traces as encoded attributes (sealed by the codec), except
    a codec key error's message: it names key ids only, and an operator must read it without
    the key it is about (the workflow task failure a missing key causes, in the UI or CLI)."""

    def to_failure(
        self,
        exception: BaseException,
        payload_converter: temporalio.converter.PayloadConverter,
        failure: Failure,
    ) -> None:
        super().to_failure(exception, payload_converter, failure)
        if isinstance(exception, CodecKeyError):
            failure.message = str(exception)


def data_converter(keyring: Keyring) -> temporalio.converter.DataConverter:
    """The SDK's default converter with the codec, and failures whose message and stack trace
    travel as encoded attributes (an error that quotes an email is not in clear either; a codec
    key error's message is, `FailureConverter`)."""
    return temporalio.converter.DataConverter(
        payload_codec=EncryptionCodec(keyring),
        failure_converter_class=FailureConverter,
    )


def local_key(data_dir: Path) -> CodecKey:
    """The local start's key under the data folder: read, or made once and kept (mode 0600).

    Made whole in a file of its own, then linked into place: two processes starting at once
    (`orderflow run --part …` each) agree on one key and never read half a file.
    """
    path = data_dir / LOCAL_KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        key = new_key("local-" + os.urandom(4).hex())
        draft = data_dir / f".{LOCAL_KEY_FILE}.{os.getpid()}.{os.urandom(4).hex()}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (key.spec() + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(draft, path)  # fails if another process put its key there first
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return parse_key(path.read_text(), str(path))


def customer_hash(customer_id: str, secret: str) -> str:
    """The `CustomerId` search attribute: a keyed hash, so the same customer is still findable
    (compute it again with the same secret) and the index holds no email."""
    normalized = customer_id.strip().lower().encode()
    return "c_" + hmac.new(secret.encode(), normalized, hashlib.sha256).hexdigest()[:40]
