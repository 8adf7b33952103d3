"""The order API's errors: RFC 9457 problem details (`application/problem+json`)."""

# no `from __future__ import annotations`: FastAPI reads these models' annotations
import logging
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from orderflow.errors import (
    InvalidOrderError,
    OrderClosedError,
    OrderflowError,
    UnknownOrderError,
    UnknownReviewError,
)

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
PROBLEM = "application/problem+json"
RETRY_AFTER_SECONDS = 5  # what a 503 asks the caller to wait


class ApiProblem(OrderflowError):
    """An error answered as problem+json: status, a short type, and what was wrong."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str,
        *,
        field: str = "",
        order_id: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.kind, self.title, self.detail = status, kind, title, detail
        self.field, self.order_id, self.headers = field, order_id, headers or {}

    def response(self) -> JSONResponse:
        """The RFC 9457 body; `field` and `order_id` are extension members when known."""
        body: dict[str, Any] = {
            "type": f"{PREFIX}/problems#{self.kind}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.field:
            body["field"] = self.field
        if self.order_id:
            body["order_id"] = self.order_id
        return JSONResponse(body, self.status, headers=self.headers, media_type=PROBLEM)


class Problem(BaseModel):
    """An error (RFC 9457 problem details)."""

    type: str = Field(description="A URI reference naming the kind of problem.")
    title: str = Field(description="The kind of problem, in words.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What was wrong, naming the value's place and the order.")
    field: str | None = Field(None, description="The request field at fault (`items[1].sku`).")
    order_id: str | None = Field(None, description="The order concerned.")


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {
        401: "No API key, or not one of ORDERFLOW_API_KEY_HASHES.",
        404: "No such order or review.",
        409: "The order is closed, or the same id was used for another order.",
        422: "A field is missing or invalid; `field` names it.",
        429: "Too many requests with this key; wait `Retry-After` seconds.",
        503: "Temporal or the database did not answer; nothing was half done. Retry later.",
    }
    return {
        code: {"model": Problem, "description": described[code]}
        for code in (401, 422, 429, 503, *codes)
    }


def _field(location: Sequence[int | str]) -> str:
    """`("body", "items", 1, "sku")` as `items[1].sku`."""
    text = ""
    for part in location[1:] if location and location[0] == "body" else location:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


async def _validation_problem(request: Request, err: Exception) -> Response:
    assert isinstance(err, RequestValidationError)
    first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
    where = _field(first.get("loc", ()))
    body = await request.body()
    found = re.search(rb'"order_id"\s*:\s*"([A-Za-z0-9._-]{1,64})"', body)
    order_id = request.path_params.get("order_id") or (found.group(1).decode() if found else "")
    message = str(first.get("msg", "invalid"))
    return ApiProblem(
        422,
        "invalid-request",
        "Invalid request",
        f"{where or 'body'}: {message}",
        field=where,
        order_id=order_id,
    ).response()


def install_problem_handlers(app: FastAPI) -> None:
    """Answer the API's errors as problem+json (the rest of the app keeps its own shapes)."""

    async def invalid(request: Request, err: Exception) -> Response:
        if request.url.path.startswith(PREFIX):
            return await _validation_problem(request, err)
        assert isinstance(err, RequestValidationError)
        return await request_validation_exception_handler(request, err)

    async def problem(_: Request, err: Exception) -> Response:
        assert isinstance(err, ApiProblem)
        return err.response()

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(ApiProblem, problem)
    made = app.openapi

    def openapi() -> dict[str, Any]:
        """The document, each API error's body under the media type it is sent with."""
        if app.openapi_schema:
            return app.openapi_schema
        document = made()
        for path, operations in document["paths"].items():
            for operation in operations.values() if path.startswith(PREFIX) else ():
                for code, answer in operation.get("responses", {}).items():
                    content = answer.get("content", {})
                    if code[0] in "45" and "application/json" in content:
                        answer["content"] = {PROBLEM: content["application/json"]}
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def unavailable(what: str, err: BaseException, order_id: str = "") -> ApiProblem:
    log.warning("order API: %s: %s", what, err)
    return ApiProblem(
        503,
        "unavailable",
        "Service unavailable",
        f"{what}: {type(err).__name__}; nothing was changed that this answer does not say",
        order_id=order_id,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def known_problem(err: OrderflowError, order_id: str = "") -> ApiProblem:
    """The domain error as its problem."""
    if isinstance(err, UnknownOrderError):
        return ApiProblem(404, "unknown-order", "Unknown order", str(err), order_id=err.order_id)
    if isinstance(err, UnknownReviewError):
        return ApiProblem(404, "unknown-review", "Unknown review", str(err))
    if isinstance(err, OrderClosedError):
        return ApiProblem(409, "order-closed", "Order closed", str(err), order_id=err.order_id)
    if isinstance(err, InvalidOrderError):
        return ApiProblem(422, "invalid-order", "Invalid order", str(err), order_id=order_id)
    return ApiProblem(422, "refused", "Refused", str(err), order_id=order_id)
