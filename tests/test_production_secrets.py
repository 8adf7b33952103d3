"""A production-shaped start refuses the public defaults: each secret is named, none is echoed."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app import embedded
from app.cli import app as cli
from app.runner import run
from orderflow.db import make_engine
from orderflow.errors import GatewaySettingsError, InsecureSettingsError
from orderflow.settings import LOCAL_API_KEY_HASH, Settings
from payments.gateway import SimulatedGateway, make_gateway
from tests.helpers import eventually

REAL_KEY_HASH = hashlib.sha256(b"of_3k9Qx7-real-key").hexdigest()
REAL = {
    "admin_password": "9f2c-real-admin-passphrase",
    "dashboard_secret": "c1d5e0b6a8f74f4c9a8e7c3d2b1a0f9e",
    "stripe_webhook_secret": "whsec_3b1f9c0d7e2a4c58b6e1",
    "razorpay_webhook_secret": "rzp_9d8c7b6a5f4e3d2c1b0a",
    "redis_url": "redis://:Xq7-redis-pass@redis.internal:6379/0",
    # the digest of a real key (`orderflow api-keys new`) beside the next one, being rotated in
    "api_key_hashes": f"{REAL_KEY_HASH}, {hashlib.sha256(b'of_8Zt2-next-key').hexdigest()}",
    "customer_hash_secret": "6b0e2f-real-customer-hash-key",
    "codec_key": "prod-2026-12:" + base64.b64encode(b"r" * 32).decode(),
}
PRODUCTION = {"embedded_temporal": False, "embedded_redis": False, "embedded_smtp": False}
DEFAULTS = Settings()
COMPOSE = Path(__file__).resolve().parent.parent / "docker-compose.yml"


def production(**changes: object) -> Settings:
    return Settings(**{**REAL, **PRODUCTION, **changes})


def test_real_secrets_start_and_the_laptop_defaults_still_do() -> None:
    production().check_production_secrets()
    Settings().check_production_secrets()  # everything embedded: local development


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"admin_password": DEFAULTS.admin_password}, "ORDERFLOW_ADMIN_PASSWORD is the local default"),
        ({"admin_password": ""}, "ORDERFLOW_ADMIN_PASSWORD is empty"),
        ({"admin_password": "admin"}, "ORDERFLOW_ADMIN_PASSWORD is a placeholder"),
        ({"dashboard_secret": DEFAULTS.dashboard_secret}, "ORDERFLOW_DASHBOARD_SECRET is the local default"),
        ({"stripe_webhook_secret": DEFAULTS.stripe_webhook_secret}, "ORDERFLOW_STRIPE_WEBHOOK_SECRET is the local default"),
        ({"stripe_webhook_secret": "whsec_change_me"}, "ORDERFLOW_STRIPE_WEBHOOK_SECRET is a placeholder"),
        ({"razorpay_webhook_secret": DEFAULTS.razorpay_webhook_secret}, "ORDERFLOW_RAZORPAY_WEBHOOK_SECRET is the local default"),
        ({"razorpay_webhook_secret": " "}, "ORDERFLOW_RAZORPAY_WEBHOOK_SECRET is empty"),
        ({"redis_url": "redis://:change-me@redis:6379/0"}, "the Redis password (ORDERFLOW_REDIS_PASSWORD or in ORDERFLOW_REDIS_URL) is a placeholder"),
        ({"redis_url": "redis://redis:6379/0"}, "the Redis password (ORDERFLOW_REDIS_PASSWORD or in ORDERFLOW_REDIS_URL) is missing"),
        ({"redis_url": "redis://redis:6379/0", "redis_password": "change-me"}, "the Redis password (ORDERFLOW_REDIS_PASSWORD or in ORDERFLOW_REDIS_URL) is a placeholder"),
        ({"redis_url": DEFAULTS.redis_url}, "the Redis password (ORDERFLOW_REDIS_PASSWORD or in ORDERFLOW_REDIS_URL) is missing"),
        ({"api_key_hashes": ""}, "ORDERFLOW_API_KEY_HASHES is empty"),
        ({"codec_key": ""}, "ORDERFLOW_CODEC_KEY is empty (customer data in Temporal would be encrypted with a key made on this machine only; `orderflow codec new-key` makes one)"),
        ({"customer_hash_secret": DEFAULTS.customer_hash_secret}, "ORDERFLOW_CUSTOMER_HASH_SECRET is the local default"),
        ({"api_key_hashes": f"{REAL_KEY_HASH},{LOCAL_API_KEY_HASH}"}, "ORDERFLOW_API_KEY_HASHES holds the local default key's digest"),
    ],
)  # fmt: skip
async def test_production_shaped_start_with_a_default_secret_refuses_to_start(
    changes: dict[str, str], named: str
) -> None:
    settings = production(**changes)
    with pytest.raises(InsecureSettingsError) as refused:
        await run(settings, ("http",))
    message = str(refused.value)
    assert refused.value.problems == [named]
    for value in changes.values():
        if value.strip() and not value.startswith("redis://"):
            assert value not in message  # named, never echoed


def test_one_embedded_server_off_is_production_shaped() -> None:
    settings = Settings(embedded_temporal=False)
    with pytest.raises(InsecureSettingsError) as refused:
        settings.check_production_secrets()
    named = " ".join(refused.value.problems)
    for variable in ("ADMIN_PASSWORD", "DASHBOARD_SECRET", "STRIPE_", "RAZORPAY_"):
        assert variable in named
    assert "REDIS_URL" not in named  # the embedded redis-server listens on loopback only


def test_orderflow_run_in_the_image_with_defaults_exits_naming_each_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("EMBEDDED_TEMPORAL", "EMBEDDED_REDIS", "EMBEDDED_SMTP"):
        monkeypatch.setenv(f"ORDERFLOW_{name}", "false")  # as the Dockerfile sets them
    result = CliRunner().invoke(cli, ["run", "--part", "http"])
    assert result.exit_code == 1
    for variable in ("ADMIN_PASSWORD", "DASHBOARD_SECRET", "STRIPE_WEBHOOK_SECRET",
                     "RAZORPAY_WEBHOOK_SECRET", "REDIS_URL", "API_KEY_HASHES"):  # fmt: skip
        assert f"ORDERFLOW_{variable}" in result.output


def test_compose_requires_every_secret_and_publishes_operator_ports_on_loopback() -> None:
    text = COMPOSE.read_text()
    for variable in ("REDIS_PASSWORD", "STRIPE_WEBHOOK_SECRET", "RAZORPAY_WEBHOOK_SECRET",
                     "ADMIN_PASSWORD", "DASHBOARD_SECRET", "API_KEY_HASHES", "CODEC_KEY"):  # fmt: skip
        assert f"${{{variable}:?" in text, variable  # compose stops when it is not set
    assert "change-me" not in text and "change_me" not in text
    published = re.findall(r"^\s+ports: \[(.*)\]", text, re.MULTILINE)
    public = [p for p in published if not p.strip('"').startswith("127.0.0.1:")]
    assert public == ['"8000:8000"']  # only the HTTP app (webhooks) faces the world
    assert len(published) >= 4  # Temporal gRPC, Temporal UI, mail UI, HTTP


def test_insecure_secrets_start_only_when_explicitly_allowed() -> None:
    allowed = production(admin_password="", allow_insecure_secrets=True)
    allowed.check_production_secrets()  # a throwaway topology on loopback
    assert allowed.insecure_secrets()  # the problems are still known (the runner logs them)


async def test_production_shaped_start_on_simulated_gateway_refuses_naming_the_setting() -> None:
    settings = Settings(**REAL, embedded_temporal=False)  # secrets fine, the gateway is not
    with pytest.raises(GatewaySettingsError) as refused:
        await run(settings, ("http",))
    [problem] = refused.value.problems
    for named in ("ORDERFLOW_GATEWAY is simulated", "ORDERFLOW_EMBEDDED_TEMPORAL=false",
                  "ORDERFLOW_ALLOW_SIMULATED_GATEWAY=true"):  # fmt: skip
        assert named in problem


def test_orderflow_run_with_embedded_temporal_off_and_no_gateway_exits_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in REAL.items():
        monkeypatch.setenv(f"ORDERFLOW_{name.upper()}", value)
    monkeypatch.setenv("ORDERFLOW_EMBEDDED_TEMPORAL", "false")
    result = CliRunner().invoke(cli, ["run", "--part", "http"])
    assert result.exit_code == 1
    assert "ORDERFLOW_GATEWAY" in result.output and "ORDERFLOW_EMBEDDED_TEMPORAL" in result.output


def test_the_simulated_gateway_starts_when_allowed_or_everything_is_embedded(
    tmp_path: Path,
) -> None:
    production(allow_simulated_gateway=True).check_gateway()  # a throwaway topology
    laptop = Settings()  # `make run`: no keys, every server embedded
    laptop.check_gateway()
    assert laptop.gateway == "simulated"
    engine = make_engine(f"sqlite:///{tmp_path / 'gw.db'}")
    assert isinstance(make_gateway(laptop, engine), SimulatedGateway)


@pytest.mark.parametrize(
    ("gateway", "named"),
    [
        ("stripe", ["ORDERFLOW_STRIPE_API_KEY is empty (ORDERFLOW_GATEWAY=stripe)"]),
        ("razorpay", ["ORDERFLOW_RAZORPAY_KEY_ID is empty (ORDERFLOW_GATEWAY=razorpay)",
                      "ORDERFLOW_RAZORPAY_KEY_SECRET is empty (ORDERFLOW_GATEWAY=razorpay)"]),
    ],
)  # fmt: skip
def test_a_real_gateway_without_its_keys_refuses_to_start(gateway: str, named: list[str]) -> None:
    for settings in (production(gateway=gateway), Settings(gateway=gateway)):
        with pytest.raises(GatewaySettingsError) as refused:
            settings.check_gateway()
        assert refused.value.problems == named
    production(gateway="stripe", stripe_api_key="sk_test_51Pq8xYz").check_gateway()
    with pytest.raises(GatewaySettingsError) as placeholder:
        production(gateway="stripe", stripe_api_key="sk_test_change-me").check_gateway()
    assert placeholder.value.problems == [
        "ORDERFLOW_STRIPE_API_KEY is a placeholder (ORDERFLOW_GATEWAY=stripe)"
    ]
    assert "sk_test_change-me" not in str(placeholder.value)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"gateway": "stripe", "stripe_api_key": "pk_live_51Pq8xYzPublishable"},
         "ORDERFLOW_STRIPE_API_KEY is not a secret key (sk_… or restricted rk_…)"),
        ({"gateway": "stripe", "stripe_api_key": "whsec_9d8c7b6a5f4e3d2c1b0aQ"},
         "ORDERFLOW_STRIPE_API_KEY is not a secret key (sk_… or restricted rk_…)"),
        ({"gateway": "razorpay", "razorpay_key_id": "9d8c7b6a5f4e", "razorpay_key_secret": "s3cr3tQz"},
         "ORDERFLOW_RAZORPAY_KEY_ID is not a key id (rzp_test_… or rzp_live_…)"),
    ],
)  # fmt: skip
def test_a_gateway_key_of_the_wrong_kind_refuses_to_start_without_echoing_it(
    changes: dict[str, str], named: str
) -> None:
    """A publishable or webhook key in the secret key's place fails every capture and refund at
    the gateway (an order paid and then cancelled ends REFUND_FAILED); the start refuses it."""
    with pytest.raises(GatewaySettingsError) as refused:
        production(**changes).check_gateway()
    assert refused.value.problems == [f"{named} (ORDERFLOW_GATEWAY={changes['gateway']})"]
    for value in changes.values():
        if value not in ("stripe", "razorpay"):
            assert value not in str(refused.value)
    production(gateway="stripe", stripe_api_key="rk_live_51Pq8xYzRestricted").check_gateway()


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"gateway": "stripe", "stripe_api_key": "sk_test_51Pq8xYzStagingKey"}, "ORDERFLOW_STRIPE_API_KEY"),
        ({"gateway": "stripe", "stripe_api_key": "rk_test_51Pq8xYzRestricted"}, "ORDERFLOW_STRIPE_API_KEY"),
        ({"gateway": "razorpay", "razorpay_key_id": "rzp_test_9d8c7b6a5f4e", "razorpay_key_secret": "s3cr3tQzStaging"},
         "ORDERFLOW_RAZORPAY_KEY_ID"),
    ],
)  # fmt: skip
async def test_a_production_shaped_start_with_a_test_mode_key_starts_warning_once_naming_the_setting(
    changes: dict[str, str], setting: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Staging runs on test-mode keys: no refusal, but one warning naming the setting, not the key."""
    settings = production(
        **changes,
        data_dir=tmp_path,
        temporal_address=f"127.0.0.1:{embedded.free_port()}",  # nobody there: the start ends
    )
    settings.check_gateway()  # not refused
    assert settings.gateway_mode == "test"
    caplog.set_level(logging.WARNING, logger="orderflow")
    started = asyncio.create_task(run(settings, ("http",)))

    def warned() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "test mode" in r.getMessage()]

    async def warning() -> list[logging.LogRecord]:
        if (found := warned()) or not started.done():
            return found
        raise AssertionError(f"the start ended without the warning: {started.exception()!r}")

    try:
        [record] = await eventually(warning, 30, "the test-mode warning")
    finally:
        started.cancel()
        await asyncio.gather(started, return_exceptions=True)
    assert setting in record.getMessage() and "no real money" in record.getMessage()
    assert len(warned()) == 1
    for value in changes.values():
        if value not in ("stripe", "razorpay"):
            assert all(value not in r.getMessage() for r in caplog.records)


def test_the_gateway_mode_is_live_test_or_simulated() -> None:
    for key in ("sk_live_51Pq8xYzLive", "rk_live_51Pq8xYzLive"):
        assert production(gateway="stripe", stripe_api_key=key).gateway_mode == "live"
    live = production(gateway="razorpay", razorpay_key_id="rzp_live_9d8c7b6a")
    assert live.gateway_mode == "live" and not live.test_mode_keys()
    assert production(gateway="stripe", stripe_api_key="sk_51Pq8xYz").gateway_mode == "unknown"
    assert Settings().gateway_mode == "simulated"
