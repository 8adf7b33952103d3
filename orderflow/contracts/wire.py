"""Every type an order service in another language sends or reads, as JSON Schema.

The schemas are generated from the contract dataclasses, so the contract is written once.
Temporal's default JSON converter writes a dataclass as an object of its fields, a StrEnum as
its value and a datetime as an ISO 8601 string, and pydantic's schema of the same dataclass says
just that (tests/test_wire.py encodes a sample of each with the converter and validates it).
`make schemas` writes them to contracts/schemas/, where they are committed; the same test fails
when the code and the committed files differ.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import json
import sys
import textwrap
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from orderflow.contracts.mail import TEMPLATE_ALIASES, EmailJob, EmailJobData
from orderflow.contracts.order import (
    CancelRequest,
    OrderInput,
    OrderResult,
    OrderState,
    PaymentAck,
    PaymentFailed,
    PaymentReceived,
    Shipment,
)
from orderflow.contracts.review import PendingReview, ReviewDecision, ReviewOutcome

SCHEMA_SUFFIX = ".schema.json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"  # pydantic writes this draft ($defs)

# schema name → its type: the workflow's input and result, its update, signals and query
# (OrderWorkflow: run, pay, payment_failed, cancel, shipped, status), the review's update and
# answers, and the email queue's job data
WIRE_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        OrderInput,
        OrderResult,
        PaymentReceived,
        PaymentFailed,
        PaymentAck,
        CancelRequest,
        Shipment,
        OrderState,
        ReviewDecision,
        ReviewOutcome,
        PendingReview,
        EmailJobData,
    )
}

# what a field's Python type cannot say: the names a template may be given by
REFINEMENTS: dict[tuple[str, str], dict[str, Any]] = {
    ("EmailJobData", "template"): {
        "enum": ["", *sorted({*(job.value for job in EmailJob), *TEMPLATE_ALIASES})]
    },
}


def attribute_docs(cls: type) -> dict[str, str]:
    """The docstrings under a dataclass's fields (pydantic reads them only from its own config)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def _dataclasses_in(cls: type) -> Iterator[type]:
    """The dataclass and every dataclass its fields hold, at any depth."""
    yield cls
    for hint in typing.get_type_hints(cls).values():
        for inner in (hint, *typing.get_args(hint)):
            if dataclasses.is_dataclass(inner) and isinstance(inner, type):
                yield from _dataclasses_in(inner)


def _close(schema: dict[str, Any], cls: type) -> None:
    """Describe a dataclass's object schema and refuse fields it does not have.

    Temporal's converter drops an unknown field silently, so a misspelt one would be lost
    without a word: the contract refuses it instead (what Python writes never has one).
    """
    schema["additionalProperties"] = False
    for name, doc in attribute_docs(cls).items():
        schema["properties"][name]["description"] = doc
    for (owner, name), extra in REFINEMENTS.items():
        if owner == cls.__name__:
            schema["properties"][name].update(extra)


def wire_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of one wire type.

    Args:
        name: a key of WIRE_TYPES (the dataclass's name).

    Returns:
        The schema, its nested types and enums in `$defs`.
    """
    cls = WIRE_TYPES[name]
    schema = TypeAdapter(cls).json_schema()
    by_title = {inner.__name__: inner for inner in _dataclasses_in(cls)}
    _close(schema, cls)
    for title, definition in schema.get("$defs", {}).items():
        if title in by_title:
            _close(definition, by_title[title])
    return {"$schema": DIALECT, "$id": f"{name}{SCHEMA_SUFFIX}", **schema}


def schema_files() -> dict[str, str]:
    """File name → text of every wire type's schema, as `make schemas` writes them."""
    return {
        f"{name}{SCHEMA_SUFFIX}": json.dumps(wire_schema(name), indent=2, ensure_ascii=False) + "\n"
        for name in WIRE_TYPES
    }


def write_schemas(folder: Path) -> list[Path]:
    """Write every schema to `folder` and remove schema files of types that are gone.

    Returns:
        The files written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    files = schema_files()
    for stale in folder.glob(f"*{SCHEMA_SUFFIX}"):
        if stale.name not in files:
            stale.unlink()
    written = []
    for file_name, text in files.items():
        path = folder / file_name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "contracts/schemas")
    for path in write_schemas(target):
        print(path)
