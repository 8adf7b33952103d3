"""Settings, read once from the environment (prefix ORDERFLOW_) into one typed object."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything configurable, with local defaults for the embedded engine."""

    model_config = SettingsConfigDict(env_prefix="ORDERFLOW_", env_file=".env", extra="ignore")

    data_dir: Path = Path("data")
    # Temporal
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    temporal_ui_port: int = 8233
    embedded_temporal: bool = True  # start `temporal server start-dev`; false on the distributed engine
    # Database: SQLite file by default, any SQLAlchemy URL (postgresql+psycopg://...) otherwise
    database_url: str = ""
    # Seed: order worker concurrency 10, payment retry 3, inventory release 8, manual review 1
    orders_concurrency: int = 10
    payments_concurrency: int = 3
    inventory_concurrency: int = 8
    reviews_concurrency: int = 1
    graceful_shutdown_seconds: float = 30.0
    # Order rules
    payment_timeout_seconds: float = 3600.0  # seed: auto-cancel pending orders after 1 hour
    payment_retry_attempts: int = 3  # seed: payment retry 3 attempts ...
    payment_retry_interval_seconds: float = 3600.0  # ... 1 hour apart
    high_value_threshold: float = 50_000.0  # seed: manual review above ₹50,000
    suspicious_failed_attempts: int = 2  # failed attempts before a success that flag a payment
    currency: str = "INR"
    # Outside systems
    erp_url: str = ""  # empty: the local ERP stand-in records syncs in the database
    erp_attempts: int = 2  # seed: order queue retries 2 attempts
    gateway_fail_captures: int = 0  # simulated gateway: fail this many captures per order first
    gateway_decline_all: bool = False  # simulated gateway: decline every capture
    # Redis (bridge queues)
    redis_url: str = "redis://localhost:6379/0"
    embedded_redis: bool = True  # start a local redis-server (AOF on, noeviction)
    queue_prefix: str = "bull"  # BullMQ's default key prefix, shared with Node producers/consumers
    # SMTP
    smtp_host: str = "localhost"
    smtp_port: int = 8025
    embedded_smtp: bool = True  # start the local SMTP sink that keeps every message
    mail_from: str = "orders@orderflow.local"
    # HTTP app (webhooks, metrics, dashboard)
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # Schedules
    report_cron: str = "0 9 * * *"  # seed: daily report at 09:00
    report_timezone: str = "Asia/Kolkata"
    stock_sync_every_seconds: float = 3600.0  # seed: hourly stock sync

    @property
    def db_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data folder."""
        return self.database_url or f"sqlite:///{self.data_dir / 'orderflow.db'}"

    @classmethod
    def from_env(cls) -> Settings:
        """Read the settings from the environment (and a .env file if present)."""
        return cls()
