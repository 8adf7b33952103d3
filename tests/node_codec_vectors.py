"""Vectors the Python codec (orderflow/codec.py) writes for the Node one (clients/node/codec.js).

One JSON shape, read by clients/node/test/codec.test.js: two keys, payloads sealed by Python
(under the current key and an old one), `CustomerId` hashes, and Python's errors for malformed
key settings and an unknown key id, each of which Node must give word for word. A committed copy
(COMMITTED) lets `node --test` run alone; tests/test_node_client.py writes a fresh one per run
and checks that the committed one still holds for Python.

Regenerate the committed copy: `.venv/bin/python -m tests.node_codec_vectors`
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import temporalio.converter
from temporalio.api.common.v1 import Payload

from orderflow import codec

COMMITTED = Path(__file__).parents[1] / "clients" / "node" / "test" / "python-vectors.json"
# test keys only, made from their labels: nothing encrypted with them is secret
CURRENT = codec.CodecKey("vector-new", hashlib.sha256(b"orderflow vector-new").digest())
OLD = codec.CodecKey("vector-old.1", hashlib.sha256(b"orderflow vector-old").digest())
SECRET_LOOKALIKE = base64.b64encode(b"not-a-real-key-but-do-not-echo-it").decode()
BAD_SPECS = [
    ("no-colon-" + SECRET_LOOKALIKE, "ORDERFLOW_CODEC_KEY"),
    ("bad id!:" + SECRET_LOOKALIKE, "ORDERFLOW_CODEC_KEY"),
    (":" + SECRET_LOOKALIKE, "ORDERFLOW_CODEC_KEY"),
    ("short:" + base64.b64encode(b"sixteen byte key").decode(), "ORDERFLOW_CODEC_OLD_KEYS entry 2"),
    ("b64:" + SECRET_LOOKALIKE[:-1] + "*", "ORDERFLOW_CODEC_KEY"),
    ("pad:" + SECRET_LOOKALIKE.rstrip("="), "ORDERFLOW_CODEC_KEY"),
    (
        "url-safe:" + base64.urlsafe_b64encode(bytes(range(200, 232))).decode(),
        "ORDERFLOW_CODEC_KEY",
    ),
    ("é" * 3 + ":" + SECRET_LOOKALIKE, "ORDERFLOW_CODEC_KEY"),
    ("spaced :" + SECRET_LOOKALIKE, "ORDERFLOW_CODEC_KEY"),
    ("no-pad:" + base64.b64encode(bytes(32)).decode().rstrip("="), "ORDERFLOW_CODEC_KEY"),
    ("padded:" + base64.b64encode(bytes(32)).decode() + "==", "ORDERFLOW_CODEC_KEY"),
    ("more-pad:" + base64.b64encode(bytes(33)).decode() + "==", "ORDERFLOW_CODEC_KEY"),
]
GOOD_SPECS = [  # shapes Python accepts: Node must too
    "  spaced: " + base64.b64encode(bytes(32)).decode(),
    "\ttabbed:" + base64.b64encode(bytes(32)).decode() + "\n",
]
CUSTOMERS = [
    "asha@example.com",
    "  Asha@Example.COM \n",
    "cust-42",
    "\x1fZOË@exämple.in\x85",
    "\ufeffbom@example.com",
    "ΣΊΣΥΦΟΣ",
    "İstanbul@example.com",
    "",
]


def wire(payload: Payload) -> dict[str, Any]:
    """A payload as JSON: metadata values and data in base64."""
    return {
        "metadata": {k: base64.b64encode(v).decode() for k, v in payload.metadata.items()},
        "data": base64.b64encode(payload.data).decode(),
    }


def from_wire(value: dict[str, Any]) -> Payload:
    """The payload `wire` wrote (Node writes the same shape)."""
    return Payload(
        metadata={k: base64.b64decode(v) for k, v in value["metadata"].items()},
        data=base64.b64decode(value["data"]),
    )


def plain_payloads() -> list[Payload]:
    """What the SDK's converter makes of an order, a None, raw bytes and a string."""
    order = {
        "order_id": "o-vector",
        "customer_id": "asha@example.com",
        "email": "asha@example.com",
        "items": [{"sku": "KITE-₹", "quantity": 2}],
        "note": "Zoë's kite",
    }
    converter = temporalio.converter.default().payload_converter
    return converter.to_payloads([order, None, bytes(range(256)), "plain text"])


def error_of(call: Any, *args: Any) -> str:
    """The CodecKeyError's message `call(*args)` raises."""
    try:
        call(*args)
    except codec.CodecKeyError as error:
        return str(error)
    raise AssertionError("no CodecKeyError")


def vectors(secret: str = "vector-hash-secret") -> dict[str, Any]:
    """A fresh set (a new nonce for every payload on each call)."""
    current = codec.EncryptionCodec(codec.Keyring(CURRENT))
    old = codec.EncryptionCodec(codec.Keyring(OLD))
    plains = plain_payloads()
    sealed = [(p, current.encode_one(p), "current") for p in plains]
    sealed.append((plains[0], old.encode_one(plains[0]), "old"))
    both = codec.Keyring(CURRENT, [OLD])
    return {
        "about": "written by tests/node_codec_vectors.py (orderflow/codec.py); test keys only",
        "keys": {"current": CURRENT.spec(), "old": OLD.spec()},
        "payloads": [{"key": k, "plain": wire(p), "sealed": wire(s)} for p, s, k in sealed],
        "hashes": [
            {"customerId": c, "secret": secret, "hash": codec.customer_hash(c, secret)}
            for c in CUSTOMERS
        ],
        "keyErrors": [
            {"spec": spec, "setting": setting, "error": error_of(codec.parse_key, spec, setting)}
            for spec, setting in BAD_SPECS
        ],
        "goodSpecs": [
            {"spec": spec, "keyId": codec.parse_key(spec, "test").key_id} for spec in GOOD_SPECS
        ],
        "unknownKey": {
            "keyId": "gone-key",
            "error": error_of(both.decrypt, "gone-key", b"\0" * 40),
        },
    }


def decrypt_all(written: list[dict[str, Any]]) -> list[tuple[Payload, Payload]]:
    """Each entry's `sealed` opened with both vector keys, beside its `plain`."""
    opener = codec.EncryptionCodec(codec.Keyring(CURRENT, [OLD]))
    return [(opener.decode_one(from_wire(e["sealed"])), from_wire(e["plain"])) for e in written]


def write(path: Path, value: dict[str, Any]) -> Path:
    """`value` as indented JSON at `path`."""
    path.write_text(json.dumps(value, indent=2, ensure_ascii=True) + "\n")
    return path


if __name__ == "__main__":
    print(write(COMMITTED, vectors()))
