"""Print bull-board's configuration (JSON) from orderflow's settings: Redis, prefix, queue names.

`make bull-board` passes it to server.js in BULL_BOARD_CONFIG, so the queue names stay in one
place (bridge/specs.py) and the credential is the ops dashboard's.
"""

from __future__ import annotations

import json

from bridge.specs import queue_specs
from orderflow.settings import Settings


def main() -> None:
    """Print the JSON."""
    settings = Settings.from_env()
    print(json.dumps({
        "redisUrl": settings.redis_url,
        "prefix": settings.queue_prefix,
        "queues": list(queue_specs(settings)),
        "user": settings.admin_user,
        "password": settings.admin_password,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
