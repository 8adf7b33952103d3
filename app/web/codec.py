"""Temporal's remote codec endpoints: the Temporal Web UI and the `temporal` CLI decode (and
encode) orderflow's encrypted payloads (orderflow/codec.py) here, so an operator reads an
order's input in the UI while Temporal itself only ever stores ciphertext.

`POST /codec/decode` and `POST /codec/encode` take and answer `{"payloads": [...]}`, the
protobuf JSON of `temporal.api.common.v1.Payloads` (metadata values and data in base64), as
the UI and the CLI send it. Both are behind the ops dashboard's HTTP Basic credentials
(settings.admin_user / admin_password). `GET /codec` answers the same credentials with the
key ids: opening it once is how a browser signs in (see below).

A browser at the Temporal UI (another origin: its own port) calls these with CORS. Only the
UI's origin (settings.codec_cors_origin, default http://localhost:<temporal_ui_port>) gets CORS
headers, with credentials allowed; the preflight (OPTIONS) is answered without credentials, as
browsers send none on it. The UI sends the Basic credentials only with its "include
cross-origin credentials" setting on (the dev server's UI has no flag for it: it is set in the
UI's Codec Server dialog, in the browser), and only those the browser already holds for this
origin: sign in once at `GET /codec` in the same browser (the UI's own fetch gets a 401
without a challenge, so no sign-in dialog holds it: `refused`).
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security.utils import get_authorization_scheme_param
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.api.common.v1 import Payload, Payloads

from app.web.dashboard import same_secret
from app.web.ingress import PayloadTooLarge, read_body
from app.web.metrics import CodecRequests
from orderflow.codec import KEY_ID, KEY_ID_METADATA, CodecKeyError, EncryptionCodec, Keyring
from orderflow.settings import Settings

PREFIX = "/codec"
PROBLEM = "application/problem+json"
MAX_BODY_BYTES = 32 * 1024 * 1024  # a page of history's payloads; Temporal caps one at 2 MB
REALM = "orderflow ops"  # the dashboard's: one sign-in opens both
# what the UI sends: its JSON body, the namespace, and (with an access token) a bearer token
ALLOWED_HEADERS = "Content-Type, X-Namespace, Authorization"
PREFLIGHT_MAX_AGE_SECONDS = 600
# protobuf JSON's bytes: standard or URL-safe base64, padding optional
BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
PAYLOAD_FIELDS = {"metadata", "data", "externalPayloads", "external_payloads"}
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


class CodecProblem(Exception):
    """A codec request answered as RFC 9457 problem details."""

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        titles = {
            400: "Bad codec request",
            401: "Unauthorized",
            403: "Origin not allowed",
            413: "Too large",
            422: "Payload not decoded",
        }
        body = {
            "type": f"{PREFIX}/problems#{self.kind}",
            "title": titles.get(self.status, "Codec error"),
            "status": self.status,
            "detail": self.detail,
        }
        return JSONResponse(body, self.status, headers=headers, media_type=PROBLEM)


def ui_origin(settings: Settings) -> str:
    """The one origin answered cross-origin: the Temporal UI's."""
    origin = settings.codec_cors_origin.strip() or f"http://localhost:{settings.temporal_ui_port}"
    return origin.rstrip("/")


def codec_endpoint(settings: Settings) -> str:
    """Where the embedded Temporal UI calls this app's codec (`--ui-codec-endpoint`)."""
    return f"http://localhost:{settings.http_port}{PREFIX}"


def parse_payloads(body: bytes) -> list[Payload]:
    """The request's payloads; a CodecProblem (400) naming the place at fault otherwise."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise CodecProblem(400, "bad-json", "the body is not JSON in UTF-8") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        where = f"line {err.lineno}, column {err.colno}"
        raise CodecProblem(400, "bad-json", f"the body is not JSON ({where})") from None
    except ValueError:  # a number too long to read
        raise CodecProblem(400, "bad-json", "the body is not JSON (a number too long)") from None
    items = document.get("payloads") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise CodecProblem(
            400, "bad-payloads", 'the body must be a JSON object {"payloads": [...]}'
        )
    for index, item in enumerate(items):
        _check_payload(item, f"payloads[{index}]")
    try:
        parsed = json_format.ParseDict({"payloads": items}, Payloads())
    except json_format.ParseError:
        raise CodecProblem(
            400, "bad-payload", "a payload is not a temporal.api.common.v1.Payload"
        ) from None
    return list(parsed.payloads)


def _check_payload(item: Any, where: str) -> None:
    """What json_format lets through: it reads a malformed base64 string as some bytes."""
    if not isinstance(item, dict):
        raise CodecProblem(400, "bad-payload", f"{where} is not a JSON object")
    for name in item:
        if name not in PAYLOAD_FIELDS:
            named = f" {name!r}" if isinstance(name, str) and IDENTIFIER.fullmatch(name) else ""
            raise CodecProblem(
                400,
                "bad-payload",
                f"{where} has a field{named} a Payload does not have"
                " (it has metadata, data, externalPayloads)",
            )
    metadata = item.get("metadata", {})
    if not isinstance(metadata, dict):
        raise CodecProblem(400, "bad-payload", f"{where}.metadata is not a JSON object")
    for key, value in metadata.items():
        named = key if IDENTIFIER.fullmatch(key.replace("-", "_")) else "(a key)"
        _check_base64(value, f"{where}.metadata.{named}")
    if "data" in item:
        _check_base64(item["data"], f"{where}.data")


def _check_base64(value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise CodecProblem(400, "bad-base64", f"{where} is not a base64 string")
    bare = value.rstrip("=")
    padded_wrong = bare != value and len(value) % 4 != 0
    if not BASE64.fullmatch(value) or len(bare) % 4 == 1 or padded_wrong:
        raise CodecProblem(400, "bad-base64", f"{where} is not valid base64")


def answer(payloads: list[Payload]) -> dict[str, Any]:
    """The protobuf JSON of the payloads, `{"payloads": [...]}` (also when there are none)."""
    return {"payloads": [json_format.MessageToDict(p) for p in payloads]}


def decode_all(codec: EncryptionCodec, payloads: list[Payload]) -> list[Payload]:
    """Each payload opened; a payload the keyring cannot open is a 422 naming its place and key."""
    opened = []
    for index, payload in enumerate(payloads):
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
        encrypted = payload.metadata.get("encoding") == b"binary/encrypted"
        if encrypted and not KEY_ID.fullmatch(key_id):
            raise CodecProblem(
                422,
                "unknown-key",
                f"payloads[{index}] names no valid codec key id in {KEY_ID_METADATA!r}"
                f" ({len(key_id)} characters)",
            )
        try:
            opened.append(codec.decode_one(payload))
        except CodecKeyError as err:
            kind = "unknown-key" if key_id not in codec.keyring.keys else "not-decrypted"
            raise CodecProblem(422, kind, f"payloads[{index}]: {err}") from None
        except DecodeError:
            raise CodecProblem(
                422, "not-decrypted", f"payloads[{index}] decrypted to bytes that are no payload"
            ) from None
    return opened


def basic_user(settings: Settings, authorization: str) -> str | None:
    """The admin's name if `authorization` carries the ops Basic credentials, else None."""
    scheme, encoded = get_authorization_scheme_param(authorization)
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = binascii.a2b_base64(encoded).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    ok = same_secret(user, settings.admin_user) & same_secret(password, settings.admin_password)
    return user if sep and ok else None


def refused(request: Request, err: CodecProblem) -> Response:
    """The problem; a 401 challenges for Basic credentials unless a web page's fetch asked.

    A page's fetch (it sends `Origin`) gets no challenge: Chromium would hold the UI's request
    open for a sign-in dialog (headless, for ever) instead of answering it. The browser signs in
    by opening `GET /codec` (a navigation: no `Origin`, so challenged) and then sends the
    credentials it keeps for this origin with the UI's calls.
    """
    challenge = err.status == 401 and "origin" not in request.headers
    return err.response({"WWW-Authenticate": f'Basic realm="{REALM}"'} if challenge else None)


def codec_router(settings: Settings, keyring: Keyring) -> APIRouter:
    """`POST /codec/encode`, `POST /codec/decode` and `GET /codec`, behind the ops credentials."""
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    codec = EncryptionCodec(keyring)

    def signed_in(request: Request) -> None:
        if basic_user(settings, request.headers.get("authorization", "")) is None:
            why = "the ops credentials are required"
            if "origin" in request.headers:  # a page's fetch: see `refused`
                here = str(request.base_url).rstrip("/") + PREFIX
                why += f": sign this browser in by opening {here} once"
            raise CodecProblem(401, "unauthorized", why)

    async def convert(request: Request, work: Callable[[list[Payload]], list[Payload]]) -> Any:
        try:
            signed_in(request)
            body = await read_body(request, MAX_BODY_BYTES)
            return JSONResponse(answer(work(parse_payloads(body))))
        except PayloadTooLarge as err:
            return CodecProblem(413, "too-large", str(err)).response()
        except CodecProblem as err:
            return refused(request, err)

    @router.post("/decode")
    async def decode(request: Request) -> Response:
        """Opens encrypted payloads (others pass through)."""
        return await convert(request, lambda payloads: decode_all(codec, payloads))

    @router.post("/encode")
    async def encode(request: Request) -> Response:
        """Seals payloads under the current key (the UI's signal and start forms send these)."""
        return await convert(request, lambda payloads: [codec.encode_one(p) for p in payloads])

    @router.get("")
    async def status(request: Request) -> Response:
        """Signed in: the key ids this server decrypts with, and the UI origin it answers."""
        try:
            signed_in(request)
        except CodecProblem as err:
            return refused(request, err)
        return JSONResponse({"status": "ok", "keys": keyring.ids, "ui_origin": ui_origin(settings)})

    return router


class CodecCors:
    """CORS for the codec endpoints, for the Temporal UI's origin only.

    A preflight from that origin is answered here, before any credentials are asked for; every
    answer to it (errors too, so the UI can read a 401) carries the CORS headers. Any other
    origin gets none: its preflight is refused and the browser never sends the request.
    """

    def __init__(self, app: ASGIApp, origin: str, prefix: str = PREFIX) -> None:
        self.app, self.origin, self.prefix = app, origin, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == self.prefix or path.startswith(self.prefix + "/")):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        allowed = headers.get("origin", b"").decode("latin-1") == self.origin
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            return await self.preflight(allowed)(scope, receive, send)

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = self.cors_headers() if allowed else {"Vary": "Origin"}
                message["headers"] = [
                    *message.get("headers", []),
                    *((k.lower().encode(), v.encode()) for k, v in extra.items()),
                ]
            await send(message)

        await self.app(scope, receive, with_cors)

    def preflight(self, allowed: bool) -> Response:
        """204 with what the UI may send; another origin's is refused without CORS headers."""
        if not allowed:
            why = f"only {self.origin} (ORDERFLOW_CODEC_CORS_ORIGIN) may call the codec"
            return CodecProblem(403, "origin", why).response({"Vary": "Origin"})
        return Response(
            status_code=204,
            headers={
                **self.cors_headers(),
                "Access-Control-Allow-Methods": "GET, POST",
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_SECONDS),
            },
        )

    def cors_headers(self) -> dict[str, str]:
        return {
            "Access-Control-Allow-Origin": self.origin,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }


def add_codec(app: FastAPI, settings: Settings, keyring: Keyring | None = None) -> None:
    """The codec endpoints and their CORS, with the settings' keys unless given others."""
    app.include_router(codec_router(settings, keyring or settings.codec_keyring()))
    app.add_middleware(CodecCors, origin=ui_origin(settings))
    app.add_middleware(CodecRequests)  # outside the CORS: preflights are counted too
