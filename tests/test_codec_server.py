"""The codec server (app/web/codec.py) over HTTP: what the Temporal UI and CLI send it.

Round trips, the ops credentials, CORS for the UI's origin only, bad bodies named, a payload
under a key this process lacks named by its key id; and the real `temporal` CLI decoding an
encrypted workflow input through it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from prometheus_client.parser import text_string_to_metric_families
from temporalio.api.common.v1 import Payload
from temporalio.testing import WorkflowEnvironment

from app import embedded
from app.telemetry import Telemetry
from app.web.app import create_app, http_server
from app.web.codec import ui_origin
from orderflow import codec
from orderflow.settings import Settings
from tests.helpers import eventually
from tests.temporal_env import TEMPORAL_BIN, TEST_KEYRING

PROBLEM = "application/problem+json"
UI = "http://localhost:8233"  # the default UI origin (temporal_ui_port 8233)


class NoQueue:
    """The webhook queue these tests never reach."""

    async def add(self, name: str, data: Any, opts: Any = None) -> Any:
        raise AssertionError("no webhook expected")


def plain(value: Any) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode())


def as_json(*payloads: Payload) -> dict[str, Any]:
    return {"payloads": [json_format.MessageToDict(p) for p in payloads]}


def from_json(body: dict[str, Any]) -> list[Payload]:
    return [json_format.ParseDict(p, Payload()) for p in body["payloads"]]


@pytest.fixture
async def http(settings: Settings, telemetry: Telemetry) -> AsyncIterator[httpx.AsyncClient]:
    """The real app in process, signed in with the ops credentials."""
    fresh = settings.model_copy(update={"metrics_cache_seconds": 0})
    app = create_app(fresh, NoQueue(), telemetry=telemetry)
    auth = (settings.admin_user, settings.admin_password)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ops", auth=auth) as client:
        yield client


def problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    body: dict[str, Any] = answer.json()
    assert body["status"] == status and body["type"].startswith("/codec/problems#")
    return body


async def test_encode_then_decode_gives_the_payloads_back(http: httpx.AsyncClient) -> None:
    order = plain({"email": "round.trip@example.com", "total": 29900})
    untouched = plain("written before the codec")
    sealed = await http.post("/codec/encode", json=as_json(order))
    assert sealed.status_code == 200, sealed.text
    [encrypted] = from_json(sealed.json())
    assert encrypted.metadata["encoding"] == b"binary/encrypted"
    assert encrypted.metadata["encryption-key-id"] == b"test-a"
    assert b"round.trip" not in encrypted.data
    # what the server sealed is what the SDK's own codec opens, and the other way round
    assert codec.EncryptionCodec(TEST_KEYRING).decode_one(encrypted) == order
    by_sdk = codec.EncryptionCodec(TEST_KEYRING).encode_one(order)
    opened = await http.post(
        "/codec/decode?preserveStorageRefs=true",  # as the UI sends it
        json=as_json(encrypted, by_sdk, untouched),
        headers={"X-Namespace": "default"},
    )
    assert opened.status_code == 200, opened.text
    assert from_json(opened.json()) == [order, order, untouched]
    assert (await http.post("/codec/decode", json={"payloads": []})).json() == {"payloads": []}


@pytest.mark.parametrize("path", ["/codec/decode", "/codec/encode", "/codec"])
async def test_the_codec_needs_the_ops_credentials(http: httpx.AsyncClient, path: str) -> None:
    body = as_json(plain("x"))
    method = "GET" if path == "/codec" else "POST"
    for auth in [None, ("admin", "not-the-password"), ("someone", "orderflow-local-admin")]:
        answer = await http.request(method, path, json=body, auth=auth)  # type: ignore[arg-type]
        assert problem(answer, 401)["detail"] == "the ops credentials are required"
        assert answer.headers["www-authenticate"] == 'Basic realm="orderflow ops"'
    bearer = await http.request(
        method, path, json=body, auth=None, headers={"Authorization": "Bearer of_local_dev_api_key"}
    )  # type: ignore[arg-type]
    assert bearer.status_code == 401  # the order API's key opens no codec
    assert (await http.request(method, path, json=body)).status_code == 200


async def test_signed_in_the_status_names_the_keys_and_the_ui_origin(
    http: httpx.AsyncClient,
) -> None:
    assert (await http.get("/codec")).json() == {
        "status": "ok",
        "keys": ["test-a"],
        "ui_origin": UI,
    }


def cors(answer: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in answer.headers.items() if k.startswith("access-control-")}


async def test_cors_answers_the_temporal_ui_origin_only(http: httpx.AsyncClient) -> None:
    asks = {"Access-Control-Request-Method": "POST"}
    asks["Access-Control-Request-Headers"] = "content-type,x-namespace"
    # the browser's preflight carries no credentials: answered anyway, for the UI's origin
    preflight = await http.options("/codec/decode", headers={"Origin": UI, **asks}, auth=None)  # type: ignore[arg-type]
    assert preflight.status_code == 204
    assert cors(preflight) == {
        "access-control-allow-origin": UI,
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": "GET, POST",
        "access-control-allow-headers": "Content-Type, X-Namespace, Authorization",
        "access-control-max-age": "600",
    }
    for other in ["http://localhost:8000", "http://127.0.0.1:8233", "https://evil.example"]:
        refused = await http.options("/codec/decode", headers={"Origin": other, **asks})
        assert refused.status_code == 403 and cors(refused) == {}
        assert "http://localhost:8233 (ORDERFLOW_CODEC_CORS_ORIGIN)" in refused.json()["detail"]
        posted = await http.post("/codec/decode", json=as_json(), headers={"Origin": other})
        assert posted.status_code == 200 and cors(posted) == {}  # the browser hides it
    # the UI's own requests carry them, also a refusal, so the UI can read the 401
    ok = await http.post("/codec/decode", json=as_json(), headers={"Origin": UI})
    assert cors(ok) == {
        "access-control-allow-origin": UI,
        "access-control-allow-credentials": "true",
    }
    anonymous = await http.post("/codec/decode", json=as_json(), headers={"Origin": UI}, auth=None)  # type: ignore[arg-type]
    assert anonymous.status_code == 401 and cors(anonymous)["access-control-allow-origin"] == UI
    # ... without a Basic challenge: Chromium would hold the UI's fetch open for a sign-in dialog
    assert "www-authenticate" not in anonymous.headers
    assert anonymous.json()["detail"] == (
        "the ops credentials are required: sign this browser in by opening http://ops/codec once"
    )
    assert "access-control-allow-origin" not in cors(
        await http.get("/healthz", headers={"Origin": UI})
    )


async def test_the_ui_origin_is_the_setting_or_localhost_at_the_ui_port(
    settings: Settings, telemetry: Telemetry
) -> None:
    assert ui_origin(settings.model_copy(update={"temporal_ui_port": 9233})) == (
        "http://localhost:9233"
    )
    moved = settings.model_copy(update={"codec_cors_origin": "https://temporal.shop.example/"})
    assert ui_origin(moved) == "https://temporal.shop.example"
    app = create_app(moved, NoQueue())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ops") as client:
        asks = {"Access-Control-Request-Method": "POST"}
        there = await client.options(
            "/codec/decode", headers={"Origin": "https://temporal.shop.example", **asks}
        )
        assert there.headers["access-control-allow-origin"] == "https://temporal.shop.example"
        local = await client.options("/codec/decode", headers={"Origin": UI, **asks})
        assert local.status_code == 403 and cors(local) == {}


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{not json", "the body is not JSON (line 1, column 2)"),
        (b'{"payloads": "\xc3\x28"}', "the body is not JSON in UTF-8"),
        (b"[]", 'the body must be a JSON object {"payloads": [...]}'),
        (b'{"payloads": {}}', 'the body must be a JSON object {"payloads": [...]}'),
        (b'{"payloads": ["x"]}', "payloads[0] is not a JSON object"),
        (b'{"payloads": [{}, {"data": "a!b="}]}', "payloads[1].data is not valid base64"),
        (b'{"payloads": [{"data": "YWJjZ"}]}', "payloads[0].data is not valid base64"),
        (b'{"payloads": [{"data": "YQ=x"}]}', "payloads[0].data is not valid base64"),
        (b'{"payloads": [{"data": 5}]}', "payloads[0].data is not a base64 string"),
        (b'{"payloads": [{"metadata": {"encoding": "%%"}}]}', "payloads[0].metadata.encoding is not valid base64"),
        (b'{"payloads": [{"metadata": ["x"]}]}', "payloads[0].metadata is not a JSON object"),
        (b'{"payloads": [{"metadta": {}}]}', "payloads[0] has a field 'metadta' a Payload does not have (it has metadata, data, externalPayloads)"),
        (b'{"payloads": [{"<script>": 1}]}', "payloads[0] has a field a Payload does not have (it has metadata, data, externalPayloads)"),
        (b'{"payloads": [{"externalPayloads": 3}]}', "a payload is not a temporal.api.common.v1.Payload"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("path", ["/codec/decode", "/codec/encode"])
async def test_a_bad_body_is_a_400_naming_what_is_wrong(
    http: httpx.AsyncClient, path: str, body: bytes, detail: str
) -> None:
    answer = await http.post(path, content=body, headers={"Content-Type": "application/json"})
    assert problem(answer, 400)["detail"] == detail


async def test_a_body_over_the_limit_is_refused_unread(http: httpx.AsyncClient) -> None:
    answer = await http.post(
        "/codec/decode", content=b"{}", headers={"Content-Length": str(64 * 1024 * 1024)}
    )
    assert "the limit is 33554432" in problem(answer, 413)["detail"]


async def test_a_payload_under_a_key_this_server_lacks_is_named_by_its_key_id(
    http: httpx.AsyncClient,
) -> None:
    other = codec.EncryptionCodec(codec.Keyring(codec.new_key("retired-2025")))
    stranger = other.encode_one(plain({"email": "old@example.com"}))
    ours = codec.EncryptionCodec(TEST_KEYRING).encode_one(plain("fine"))
    body = problem(await http.post("/codec/decode", json=as_json(ours, stranger)), 422)
    assert body["type"] == "/codec/problems#unknown-key"
    assert body["detail"] == (
        "payloads[1]: payload encrypted with codec key 'retired-2025', which this process does"
        " not have (it has 'test-a'): add it to ORDERFLOW_CODEC_OLD_KEYS"
    )
    damaged = Payload()
    damaged.CopyFrom(ours)
    damaged.data = ours.data[:-1] + bytes([ours.data[-1] ^ 1])
    body = problem(await http.post("/codec/decode", json=as_json(damaged)), 422)
    assert body["type"] == "/codec/problems#not-decrypted" and "'test-a'" in body["detail"]
    nameless = Payload(metadata={"encoding": b"binary/encrypted"}, data=ours.data)
    body = problem(await http.post("/codec/decode", json=as_json(nameless)), 422)
    assert body["detail"] == (
        "payloads[0] names no valid codec key id in 'encryption-key-id' (0 characters)"
    )


async def test_the_codec_is_not_in_the_order_apis_openapi(http: httpx.AsyncClient) -> None:
    document = (await http.get("/api/v1/openapi.json")).json()
    assert document["paths"] and not [p for p in document["paths"] if p.startswith("/codec")]


def codec_requests(text: str, operation: str, code: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "orderflow_codec_requests_total"
        and s.labels.get("operation") == operation
        and s.labels.get("code") == code
    )


async def test_codec_requests_are_counted_on_metrics(http: httpx.AsyncClient) -> None:
    before = (await http.get("/metrics")).text
    for _ in range(2):
        await http.post("/codec/decode", json=as_json())
    await http.post("/codec/encode", json=as_json(), auth=None)  # type: ignore[arg-type]
    await http.options(
        "/codec/decode", headers={"Origin": UI, "Access-Control-Request-Method": "POST"}
    )
    after = (await http.get("/metrics")).text
    for operation, code, n in [("decode", "200", 2), ("encode", "401", 1), ("preflight", "204", 1)]:
        grew = codec_requests(after, operation, code) - codec_requests(before, operation, code)
        assert grew == n, (operation, code)


async def test_the_temporal_cli_decodes_an_encrypted_workflow_input_through_the_codec(
    env: WorkflowEnvironment, settings: Settings
) -> None:
    """The CLI's remote codec (Go SDK) speaks the same JSON: `temporal workflow show` decodes."""
    local = settings.model_copy(
        update={"http_host": "127.0.0.1", "http_port": embedded.free_port()}
    )
    server = http_server(local, create_app(local, NoQueue()))
    serving = asyncio.create_task(server.serve())
    workflow_id = f"codec-cli-{uuid.uuid4().hex[:8]}"
    handle = await env.client.start_workflow(  # no worker: only its input matters
        "NoSuchWorkflow", {"email": "cli.reader@example.com"}, id=workflow_id,
        task_queue=f"codec-cli-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    try:

        async def listening() -> bool:
            return bool(getattr(server, "started", False))

        await eventually(listening, what="the HTTP app listening")
        address = env.client.service_client.config.target_host
        show = [TEMPORAL_BIN, "workflow", "show", "-w", workflow_id, "--address", address, "-o", "json"]  # fmt: skip
        pair = f"{local.admin_user}:{local.admin_password}".encode()
        credentials = base64.b64encode(pair).decode()
        endpoint = f"http://127.0.0.1:{local.http_port}/codec"
        decoded = await asyncio.to_thread(
            subprocess.run,
            [*show, "--codec-endpoint", endpoint, "--codec-auth", f"Basic {credentials}"],
            capture_output=True, timeout=30, check=True,
        )  # fmt: skip
        stored = await asyncio.to_thread(
            subprocess.run, show, capture_output=True, timeout=30, check=True
        )
    finally:
        await handle.terminate()
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
    assert input_of(stored.stdout)["metadata"]["encoding"] == "binary/encrypted"
    opened = input_of(decoded.stdout)
    assert opened["metadata"]["encoding"] == "json/plain"
    assert json.loads(opened["data"]) == {"email": "cli.reader@example.com"}


def input_of(shown: bytes) -> dict[str, Any]:
    """The started event's first input payload, metadata and data base64-decoded."""
    started = json.loads(shown)["events"][0]["workflowExecutionStartedEventAttributes"]
    payload = started["input"]["payloads"][0]
    metadata = {k: base64.b64decode(v).decode() for k, v in payload["metadata"].items()}
    return {"metadata": metadata, "data": base64.b64decode(payload["data"])}
