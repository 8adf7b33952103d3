"""Settings, read once from the environment (prefix ORDERFLOW_) into one typed object."""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal
from pathlib import Path
from urllib.parse import unquote, urlparse

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from orderflow.codec import CodecKeyError, Keyring, local_key, parse_key
from orderflow.contracts.deployment import (
    BUILD_ID_PATTERN,
    BUILD_ID_RULE,
    DEFAULT_DEPLOYMENT_NAME,
    DEPLOYMENT_NAME_PATTERN,
    DEPLOYMENT_NAME_RULE,
)
from orderflow.contracts.payment import (
    GATEWAY_SETTINGS,
    GatewayMode,
    GatewayName,
    GatewaySettingsSpec,
)
from orderflow.errors import GatewaySettingsError, InsecureSettingsError
from orderflow.redis_url import (
    RedisUrlError,
    check_cluster_prefix,
    is_cluster_url,
    is_sentinel_url,
    normalize_cluster_url,
    normalize_redis_url,
    parse_cluster_url,
    parse_sentinel_url,
)

ENV_PREFIX = "ORDERFLOW_"
# Secrets a production-shaped start must not run with: their defaults are in this public repo
# the order API's local key: in the README's curl examples, refused by a production-shaped start
LOCAL_API_KEY = "of_local_dev_api_key"
LOCAL_API_KEY_HASH = hashlib.sha256(LOCAL_API_KEY.encode()).hexdigest()
API_KEY_DIGEST = re.compile(r"[0-9a-f]{64}")
GUARDED_SECRETS = (
    "admin_password",
    "dashboard_secret",
    "customer_hash_secret",
    *(spec.webhook_secret for spec in GATEWAY_SETTINGS.values()),
)
# Placeholders seen in compose files and docs; a secret containing one is not a secret
PLACEHOLDERS = ("change-me", "change_me", "changeme", "orderflow-local", "local_dev", "local-dev")
WEAK_SECRETS = frozenset({"admin", "password", "secret", "orderflow", "redis", "test", "whsec_"})


class QueueSettings(BaseModel):
    """One bridge queue's numbers: a group of `Settings`, read from ORDERFLOW_<GROUP>_<FIELD>.

    A flat setting of the same group prefix that is no field here (ORDERFLOW_WEBHOOK_RATE_LIMIT,
    the ingress budget) stays a setting of its own: the group ignores it.
    """

    model_config = ConfigDict(use_attribute_docstrings=True)

    concurrency: int
    """Jobs one worker runs at once."""
    attempts: int
    """Tries of a job before it fails (and goes to the DLQ)."""
    backoff_ms: int
    """First retry's delay; each next one doubles it (BullMQ's exponential backoff)."""
    timeout_seconds: float
    """A job running longer is hung: it fails this attempt."""
    rate_max: int | None = None
    """At most this many job starts per `rate_duration_ms` across workers; None: no limiter."""
    rate_duration_ms: int = 1000
    """The limiter's sliding window."""


class WebhookQueueSettings(QueueSettings):
    """The payment webhook queue's group: its outage and unknown-order windows too."""

    outage_window_seconds: float = 7200.0
    """An outage (Temporal, the database) is waited out this long before attempts count."""
    unknown_order_window_seconds: float = 600.0
    """An event for an order nobody started yet is retried this long, then dead-lettered."""


class Settings(BaseSettings):
    """Everything configurable, with local defaults for the embedded engine."""

    # a value that fails validation is never echoed: it may be a secret in the wrong variable
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        hide_input_in_errors=True,
        # a group's fields keep their flat names: ORDERFLOW_EMAIL_RATE_MAX is email.rate_max,
        # and one of them set leaves the group's other defaults as they are
        env_nested_delimiter="_",
        env_nested_max_split=1,
        nested_model_default_partial_update=True,
    )

    data_dir: Path = Path("data")
    seed_catalogue: bool = True  # add the starter products on start (switch off in production)
    # Temporal
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    temporal_ui_port: int = 8233
    embedded_temporal: bool = (
        True  # start `temporal server start-dev`; false on the distributed engine
    )
    # Worker Deployment Versioning (docs/VERSIONING.md): with a build id (the image's tag or git
    # sha) the Temporal workers poll as version <deployment_name>.<build_id>; pinned workflows
    # stay on the build they started on, and `orderflow deploy promote <build>` sends new runs
    # to a build. Empty (the default, as the SDK's): unversioned workers, patches only
    deployment_name: str = DEFAULT_DEPLOYMENT_NAME
    build_id: str = ""
    # Database: SQLite file by default, any SQLAlchemy URL (postgresql+psycopg://...) otherwise
    database_url: str = ""
    # Schema: the embedded default migrates on start; where a migration job runs (compose), the
    # serving processes set this false and wait up to schema_wait_seconds for that job instead
    migrate_on_start: bool = True
    schema_wait_seconds: float = 300.0
    # Seed: order worker concurrency 10, payment retry 3, inventory release 8, manual review 1
    orders_concurrency: int = 10
    payments_concurrency: int = 3
    inventory_concurrency: int = 8
    reviews_concurrency: int = 1
    graceful_shutdown_seconds: float = 30.0
    # Workflow runs kept in each worker's memory between tasks (an evicted one is rebuilt by
    # replaying its history): bounds a worker's memory however many orders are pending
    max_cached_workflows: int = 1000
    # Run workflow code in Temporal's sandbox (it re-imports the workflow's module for every run
    # and wraps every activation: a quarter of the orders worker's CPU, bench/README.md). The
    # unit tier and the replay test always run it sandboxed: non-deterministic calls fail there.
    workflow_sandbox: bool = False
    # Order rules
    payment_timeout_seconds: float = 3600.0  # seed: auto-cancel pending orders after 1 hour
    payment_retry_attempts: int = 3  # seed: payment retry 3 attempts ...
    payment_retry_interval_seconds: float = 3600.0  # ... 1 hour apart
    high_value_threshold: Decimal = Decimal(50_000)  # seed: above ₹50,000 (major units of currency)
    suspicious_failed_attempts: int = 2  # failed attempts before a success that flag a payment
    currency: str = "INR"
    # Outside systems
    erp_url: str = ""  # empty: the local ERP stand-in records syncs in the database
    erp_attempts: int = 2  # seed: order queue retries 2 attempts
    # Payment gateway: simulated (the zero-setup default; moves no money), stripe or razorpay
    gateway: GatewayName = GatewayName.SIMULATED
    # a production-shaped start refuses the simulated gateway unless this says it is a throwaway
    allow_simulated_gateway: bool = False
    # each real gateway's keys: which it needs and what they start with in GATEWAY_SETTINGS
    # (orderflow/contracts/payment.py)
    stripe_api_key: str = ""  # sk_test_... for test mode, sk_live_... (or a restricted rk_...)
    stripe_api_base: str = ""  # empty: Stripe's own API; a localstripe URL in the tests
    razorpay_key_id: str = ""  # rzp_test_... / rzp_live_...
    razorpay_key_secret: str = ""
    razorpay_api_base: str = ""  # empty: Razorpay's own API (https://api.razorpay.com)
    # one gateway HTTP call; below the capture activity's 30 s start-to-close timeout
    gateway_timeout_seconds: float = Field(default=20.0, gt=0, lt=30)
    gateway_fail_captures: int = 0  # simulated gateway: fail this many captures per order first
    gateway_decline_all: bool = False  # simulated gateway: decline every capture
    # Redis (bridge queues)
    # redis:// or rediss:// (TLS; ?ssl_ca_certs=/path/ca.pem, ?ssl_cert_reqs=none for no check).
    # A password in it may hold any character (# / @ : ...), raw or percent-encoded; or give it
    # in redis_password instead, which needs no encoding and wins over the URL's
    # or a primary found through Sentinel (orderflow/redis_url.py, docs/redis.md):
    # redis+sentinel://[:SENTINELPASS@]host:26379,host2:26379/MASTERNAME/DB
    redis_url: str = "redis://localhost:6379/0"
    redis_password: str = ""  # the data nodes' (with Sentinel too)
    redis_sentinel_password: str = ""  # the Sentinels' own, when they want one (requirepass)
    # or a Redis Cluster: redis_cluster=true, redis_url=redis://h1:7000,h2:7001 (seed nodes;
    # written as redis+cluster://...), and a queue_prefix with a hash tag ({bull})
    redis_cluster: bool = False
    embedded_redis: bool = True  # start a local redis-server (AOF on, noeviction)
    queue_prefix: str = "bull"  # BullMQ's default key prefix, shared with Node producers/consumers
    # Bridge queues: one group per queue (QueueSettings), the seed's numbers as defaults;
    # ORDERFLOW_<GROUP>_<FIELD> overrides one field (ORDERFLOW_EMAIL_CONCURRENCY=10)
    email: QueueSettings = QueueSettings(
        concurrency=5,  # seed: email worker concurrency 5 (I/O bound)
        attempts=3,  # seed: 3 attempts ...
        backoff_ms=2000,  # ... exponential from 2 s: 2 s, 4 s
        rate_max=100,  # seed limiter: at most 100 emails ...
        rate_duration_ms=1000,  # ... per second (the SMTP relay's budget)
        timeout_seconds=30.0,  # an SMTP hand-off takes under a second; 30 s is hung
    )
    webhook: WebhookQueueSettings = WebhookQueueSettings(
        concurrency=20,  # seed: payment webhook concurrency 20 (fast processing)
        attempts=5,  # seed: 5 attempts, with idempotency
        backoff_ms=1000,  # exponential from 1 s: 1, 2, 4, 8 s
        # a workflow signal is sub-second; a minute is stuck. A pay update still running at half
        # of it (a refused hold being released) is waited for from the delayed set, not timed out
        timeout_seconds=60.0,
    )
    job_max_payload_bytes: int = 64 * 1024  # seed: small payloads; store large data in the DB
    bridge_grace_seconds: float = 20.0  # finish active jobs on SIGTERM before handing them back
    # SMTP
    smtp_host: str = "localhost"
    smtp_port: int = 8025
    embedded_smtp: bool = True  # start the local SMTP sink that keeps every message
    mail_from: str = "orders@orderflow.local"
    # HTTP app (webhooks, metrics, dashboard)
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # Payment webhooks: local dev secrets only; set the gateways' real ones in production
    stripe_webhook_secret: str = "whsec_orderflow_local_dev"
    razorpay_webhook_secret: str = "orderflow_local_dev_razorpay"
    # Stripe's default window against replayed signatures; never 0 (that would accept any age)
    webhook_tolerance_seconds: int = Field(default=300, ge=1, le=86_400)
    # per-client request budget of the webhook endpoints, counted in Redis so every replica
    # shares it; over it the answer is 429 + Retry-After (gateways retry). 0 switches it off
    webhook_rate_limit: int = Field(default=3000, ge=0)
    webhook_rate_window_seconds: int = Field(default=60, ge=1)
    # behind a trusted proxy: the header it appends the client address to (its last entry is
    # used), e.g. X-Forwarded-For; empty: the TCP peer is the client
    webhook_client_ip_header: str = ""
    webhook_max_body_bytes: int = 512 * 1024  # events are a few KiB; refuse far larger
    webhook_enqueue_timeout_seconds: float = 5.0  # answer 503 (gateway redelivers) if Redis stalls
    # HTTP order API (/api/v1, app/web/orders_api.py): the SHA-256 hex digests of its bearer
    # keys, comma-separated, several at once so a key can be rotated (`orderflow api-keys new`
    # makes a key and its digest). The default is LOCAL_API_KEY's, for `make run` and the
    # tests; a production-shaped start refuses it
    api_key_hashes: str = LOCAL_API_KEY_HASH
    api_rate_limit: int = Field(default=1200, ge=0)  # requests per key per window; 0: no limit
    api_rate_window_seconds: int = Field(default=60, ge=1)
    # Operations: telemetry, dashboard, cleanup (app/telemetry.py, app/web/dashboard.py)
    service_name: str = "orderflow"  # OTel resource service.name
    allow_insecure_secrets: bool = False  # only for throwaway topologies on loopback (tests)
    metrics_cache_seconds: float = 10.0  # /metrics reads Redis and the database at most this often
    metrics_token: str = ""  # if set, /metrics wants `Authorization: Bearer <token>`
    # this process's /metrics and /healthz on its own port (0: off; the http part's app has both
    # then only there), bound to metrics_host
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    admin_user: str = "admin"  # HTTP Basic for the ops dashboard; set a real one in production
    admin_password: str = "orderflow-local-admin"
    # signs the dashboard's form tokens, so any replica (and a restarted one) accepts them
    dashboard_secret: str = "orderflow-local-dashboard-secret"
    # Customer data encrypted in Temporal (orderflow/codec.py): the current AES-256 key as
    # <id>:<base64 of 32 bytes> (`orderflow codec new-key`), and older keys that still decrypt,
    # comma-separated. Empty on a local start: a key is made under data_dir on first start and
    # kept; a production-shaped start refuses it empty
    codec_key: str = ""
    codec_old_keys: str = ""
    # keys the `CustomerId` search attribute's hash (the index holds no email); never rotate it
    # without re-indexing, or earlier orders are no longer found by customer
    customer_hash_secret: str = "orderflow-local-customer-hash"
    # the Temporal UI's origin, the only one the codec endpoints answer cross-origin;
    # default http://localhost:<ui port>
    codec_cors_origin: str = ""
    temporal_ui_url: str = ""  # dashboard links to runs here; default http://localhost:<ui port>
    failed_job_retention_days: float = 7.0  # seed: clean(7 days, 'failed'), run by a schedule
    queue_cleanup_every_seconds: float = 3600.0  # how often the cleanup schedule runs
    # Schedules
    report_cron: str = "0 9 * * *"  # seed: daily report at 09:00
    report_timezone: str = "Asia/Kolkata"
    reconciliation_cron: str = (
        "0 2 * * *"  # daily payment reconciliation, after the night's webhooks
    )
    stock_sync_every_seconds: float = 3600.0  # seed: hourly stock sync

    @property
    def db_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data folder."""
        return self.database_url or f"sqlite:///{self.data_dir / 'orderflow.db'}"

    @field_validator("codec_key", "codec_old_keys")
    @classmethod
    def _codec_keys(cls, value: str, info: ValidationInfo) -> str:
        setting = f"{ENV_PREFIX}{(info.field_name or '').upper()}"
        for position, entry in enumerate(value.split(","), 1):
            if entry.strip():
                try:
                    parse_key(entry, f"{setting} entry {position}")
                except CodecKeyError as error:  # never echoed: the message names no secret
                    raise ValueError(str(error)) from None
        return value

    @field_validator("deployment_name", "build_id")
    @classmethod
    def _deployment_names(cls, value: str, info: ValidationInfo) -> str:
        # never echoed, as every value that fails validation here (it may be a misplaced secret)
        setting = f"{ENV_PREFIX}{(info.field_name or '').upper()}"
        if info.field_name == "build_id":
            if value and not BUILD_ID_PATTERN.fullmatch(value):
                raise ValueError(f"{setting} is not a build id: use {BUILD_ID_RULE}")
        elif not DEPLOYMENT_NAME_PATTERN.fullmatch(value):
            raise ValueError(f"{setting} is not a deployment name: use {DEPLOYMENT_NAME_RULE}")
        return value

    @property
    def worker_versioning(self) -> bool:
        """True when the workers poll as a Worker Deployment Version (a build id is set)."""
        return bool(self.build_id)

    @field_validator("api_key_hashes")
    @classmethod
    def _api_key_digests(cls, value: str) -> str:
        for position, entry in enumerate(value.split(","), 1):
            digest = entry.strip().lower()
            if digest and not API_KEY_DIGEST.fullmatch(digest):
                # never echoed: it may be a key pasted here by mistake
                raise ValueError(
                    f"{ENV_PREFIX}API_KEY_HASHES entry {position} is not a SHA-256 hex digest"
                    " (64 hex characters); `orderflow api-keys hash` prints a key's digest"
                )
        return value

    @property
    def api_keys(self) -> tuple[str, ...]:
        """The SHA-256 hex digests of the order API's bearer keys."""
        return tuple(d for e in self.api_key_hashes.split(",") if (d := e.strip().lower()))

    def codec_keyring(self) -> Keyring:
        """The codec's keys: the configured ones, or on a local start the data folder's."""
        if self.codec_key.strip():
            current = parse_key(self.codec_key, f"{ENV_PREFIX}CODEC_KEY")
        else:
            current = local_key(self.data_dir)
        old = [
            parse_key(entry, f"{ENV_PREFIX}CODEC_OLD_KEYS entry {position}")
            for position, entry in enumerate(self.codec_old_keys.split(","), 1)
            if entry.strip()
        ]
        return Keyring(current, old)

    @model_validator(mode="after")
    def _encode_redis_url(self) -> Settings:
        try:
            if self.redis_cluster or is_cluster_url(self.redis_url):
                self.redis_url = normalize_cluster_url(self.redis_url, self.redis_password)
                self.redis_cluster = True
                check_cluster_prefix(self.queue_prefix)
            else:
                self.redis_url = normalize_redis_url(
                    self.redis_url, self.redis_password, self.redis_sentinel_password
                )
        except RedisUrlError as error:  # names the setting, never the URL (it holds passwords)
            raise ValueError(str(error)) from None
        return self

    @property
    def redis_data_password(self) -> str | None:
        """The data nodes' password, from either kind of URL (None without one)."""
        if is_sentinel_url(self.redis_url):
            return parse_sentinel_url(self.redis_url).password
        if is_cluster_url(self.redis_url):
            return parse_cluster_url(self.redis_url).password
        password = urlparse(self.redis_url).password
        return unquote(password) if password else None

    @property
    def production_shaped(self) -> bool:
        """True unless every server is the embedded local one (`orderflow run` on a laptop)."""
        return not (self.embedded_temporal and self.embedded_redis and self.embedded_smtp)

    def insecure_secrets(self) -> list[str]:
        """Each secret that is empty, a public default or a placeholder, by its variable name."""
        problems = []
        for name in GUARDED_SECRETS:
            value = getattr(self, name)
            default = type(self).model_fields[name].default
            if why := _weak(value, default):
                problems.append(f"{ENV_PREFIX}{name.upper()} is {why}")
        if not self.api_keys:
            problems.append(f"{ENV_PREFIX}API_KEY_HASHES is empty")
        elif LOCAL_API_KEY_HASH in self.api_keys:
            problems.append(f"{ENV_PREFIX}API_KEY_HASHES holds the local default key's digest")
        if not self.codec_key.strip():
            problems.append(
                f"{ENV_PREFIX}CODEC_KEY is empty (customer data in Temporal would be encrypted"
                " with a key made on this machine only; `orderflow codec new-key` makes one)"
            )
        if not self.embedded_redis:
            password = self.redis_data_password
            why = _weak(password, None) if password else "missing"
            if why:
                problems.append(
                    f"the Redis password ({ENV_PREFIX}REDIS_PASSWORD or in {ENV_PREFIX}REDIS_URL)"
                    f" is {why}"
                )
        return problems

    def check_production_secrets(self) -> None:
        """Raise InsecureSettingsError when a production-shaped start has a public secret.

        ORDERFLOW_ALLOW_INSECURE_SECRETS=true lets a throwaway topology on loopback (the
        many-process tests) start anyway; the runner logs each problem as a warning then.
        """
        if self.production_shaped and (problems := self.insecure_secrets()):
            if self.allow_insecure_secrets:
                return
            raise InsecureSettingsError(problems)

    def gateway_problems(self) -> list[str]:
        """Why the configured gateway cannot start (each names its setting), or []."""
        name = f"{ENV_PREFIX}GATEWAY"
        if self.gateway is GatewayName.SIMULATED:
            if not self.production_shaped or self.allow_simulated_gateway:
                return []
            real = " or ".join(f"{name}={gateway.value}" for gateway in GATEWAY_SETTINGS)
            off = [
                f"{ENV_PREFIX}EMBEDDED_{part.upper()}=false"
                for part in ("temporal", "redis", "smtp")
                if not getattr(self, f"embedded_{part}")
            ]
            return [
                f"{name} is simulated (it moves no money) in a production-shaped start"
                f" ({', '.join(off)}): set {real} with its API keys,"
                f" or {ENV_PREFIX}ALLOW_SIMULATED_GATEWAY=true for a throwaway topology"
            ]
        spec = GATEWAY_SETTINGS[self.gateway]
        values = {key: getattr(self, key) for key in spec.keys}
        return [
            f"{ENV_PREFIX}{key.upper()} is {why} ({name}={self.gateway.value})"
            for key, value in values.items()
            if (why := _weak(value, None) or _wrong_kind(spec, key, value))
        ]

    @property
    def gateway_mode(self) -> GatewayMode:
        """Live, test or simulated, from the gateway's key (shown on /ops, warned of at start)."""
        if self.gateway is GatewayName.SIMULATED:
            return GatewayMode.SIMULATED
        spec = GATEWAY_SETTINGS[self.gateway]
        key = getattr(self, spec.mode_key).strip()
        if key.startswith(spec.live_prefixes):
            return GatewayMode.LIVE
        if key.startswith(spec.test_prefixes):
            return GatewayMode.TEST
        return GatewayMode.UNKNOWN

    def test_mode_keys(self) -> list[str]:
        """The settings (variable names, never values) holding a test-mode gateway key, or []."""
        if self.gateway_mode is not GatewayMode.TEST:
            return []
        return [f"{ENV_PREFIX}{GATEWAY_SETTINGS[self.gateway].mode_key.upper()}"]

    def check_gateway(self) -> None:
        """Raise GatewaySettingsError when the gateway cannot run (see gateway_problems)."""
        if problems := self.gateway_problems():
            raise GatewaySettingsError(problems)

    @classmethod
    def from_env(cls) -> Settings:
        """Read the settings from the environment (and a .env file if present)."""
        return cls()


def _wrong_kind(spec: GatewaySettingsSpec, setting: str, value: str) -> str:
    """Why `value` is not the kind of key `setting` holds (a publishable pk_…), or ""."""
    kind = spec.key_kinds.get(setting)
    if kind and not value.strip().startswith(kind.prefixes):
        return f"not {kind.description}"
    return ""


def _weak(value: str, default: object) -> str:
    """Why `value` is no secret ("empty", "the local default", ...), or "" if it may be one."""
    if not value.strip():
        return "empty"
    if value == default:
        return "the local default"
    lowered = value.lower()
    if lowered in WEAK_SECRETS or any(p in lowered for p in PLACEHOLDERS):
        return "a placeholder"
    return ""
