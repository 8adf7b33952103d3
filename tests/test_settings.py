"""Settings (issue 19): each bridge queue's numbers are one QueueSettings group, and every
variable name the flat settings had still sets the same value."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.specs import RateLimit
from orderflow.settings import Settings
from workers.queues import email_spec, webhook_spec

# every variable of the six-flat-settings era -> (a value to set, where it lands, what it reads)
OLD_NAMES: dict[str, tuple[str, Callable[[Settings], Any], Any]] = {
    "ORDERFLOW_EMAIL_CONCURRENCY": ("7", lambda s: s.email.concurrency, 7),
    "ORDERFLOW_EMAIL_ATTEMPTS": ("4", lambda s: s.email.attempts, 4),
    "ORDERFLOW_EMAIL_BACKOFF_MS": ("2500", lambda s: s.email.backoff_ms, 2500),
    "ORDERFLOW_EMAIL_RATE_MAX": ("50", lambda s: s.email.rate_max, 50),
    "ORDERFLOW_EMAIL_RATE_DURATION_MS": ("2000", lambda s: s.email.rate_duration_ms, 2000),
    "ORDERFLOW_EMAIL_TIMEOUT_SECONDS": ("12.5", lambda s: s.email.timeout_seconds, 12.5),
    "ORDERFLOW_WEBHOOK_CONCURRENCY": ("9", lambda s: s.webhook.concurrency, 9),
    "ORDERFLOW_WEBHOOK_ATTEMPTS": ("6", lambda s: s.webhook.attempts, 6),
    "ORDERFLOW_WEBHOOK_BACKOFF_MS": ("1500", lambda s: s.webhook.backoff_ms, 1500),
    "ORDERFLOW_WEBHOOK_TIMEOUT_SECONDS": ("45", lambda s: s.webhook.timeout_seconds, 45.0),
    "ORDERFLOW_WEBHOOK_OUTAGE_WINDOW_SECONDS": (
        "60",
        lambda s: s.webhook.outage_window_seconds,
        60.0,
    ),
    "ORDERFLOW_WEBHOOK_UNKNOWN_ORDER_WINDOW_SECONDS": (
        "30",
        lambda s: s.webhook.unknown_order_window_seconds,
        30.0,
    ),
    # the flat settings beside the webhook group keep their own values
    "ORDERFLOW_WEBHOOK_RATE_LIMIT": ("17", lambda s: s.webhook_rate_limit, 17),
    "ORDERFLOW_WEBHOOK_RATE_WINDOW_SECONDS": ("9", lambda s: s.webhook_rate_window_seconds, 9),
    "ORDERFLOW_WEBHOOK_TOLERANCE_SECONDS": ("120", lambda s: s.webhook_tolerance_seconds, 120),
    "ORDERFLOW_WEBHOOK_MAX_BODY_BYTES": ("1024", lambda s: s.webhook_max_body_bytes, 1024),
    "ORDERFLOW_WEBHOOK_ENQUEUE_TIMEOUT_SECONDS": (
        "2.5",
        lambda s: s.webhook_enqueue_timeout_seconds,
        2.5,
    ),
    "ORDERFLOW_WEBHOOK_CLIENT_IP_HEADER": (
        "X-Forwarded-For",
        lambda s: s.webhook_client_ip_header,
        "X-Forwarded-For",
    ),
}


@pytest.mark.parametrize("name", sorted(OLD_NAMES))
def test_every_old_variable_name_sets_the_same_value(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    value, read, expected = OLD_NAMES[name]
    defaults = Settings()
    monkeypatch.setenv(name, value)
    configured = Settings()
    assert read(configured) == expected
    # only that one value moved: the group's other numbers keep their seed defaults
    others = [n for n in OLD_NAMES if n != name]
    assert [OLD_NAMES[n][1](configured) for n in others] == [
        OLD_NAMES[n][1](defaults) for n in others
    ]


def test_all_old_names_at_once_and_from_a_dotenv_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("".join(f"{name}={value}\n" for name, (value, _, _) in OLD_NAMES.items()))
    from_file = Settings(_env_file=dotenv)  # type: ignore[call-arg]
    for name, value in ((n, v) for n, (v, _, _) in OLD_NAMES.items()):
        monkeypatch.setenv(name, value)
    from_env = Settings()
    for name, (_, read, expected) in OLD_NAMES.items():
        assert (read(from_env), read(from_file)) == (expected, expected), name


def test_the_queues_keep_the_seed_numbers() -> None:
    settings = Settings()
    email, webhook = email_spec(settings), webhook_spec(settings)
    assert (email.concurrency, email.attempts, email.timeout_seconds) == (5, 3, 30.0)
    assert email.backoff == {"type": "exponential", "delay": 2000}
    assert email.rate_limit == RateLimit(100, 1000)
    assert (webhook.concurrency, webhook.attempts, webhook.timeout_seconds) == (20, 5, 60.0)
    assert webhook.backoff == {"type": "exponential", "delay": 1000}
    assert webhook.rate_limit is None
    assert (
        settings.webhook.outage_window_seconds,
        settings.webhook.unknown_order_window_seconds,
    ) == (
        7200.0,
        600.0,
    )
    assert email.max_payload_bytes == webhook.max_payload_bytes == settings.job_max_payload_bytes


def test_a_group_is_set_as_a_whole_in_code() -> None:
    settings = Settings(email=Settings().email.model_copy(update={"concurrency": 1}))
    assert (settings.email.concurrency, settings.email.attempts) == (1, 3)
    assert email_spec(settings).concurrency == 1
