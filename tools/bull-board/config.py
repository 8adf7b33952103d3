"""Print bull-board's configuration (JSON) from orderflow's settings: Redis, prefix, queue names.

`make bull-board` passes it to server.js in BULL_BOARD_CONFIG, so the queue names stay in one
place (bridge/specs.py) and the credential is the ops dashboard's. The board can retry, clean
and remove jobs: listening beyond loopback (BULL_BOARD_HOST) with an admin password that is the
public default, a placeholder or empty is refused (exit 2, nothing printed on stdout).
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys

from orderflow.settings import ENV_PREFIX, Settings
from workers.queues import queue_specs

DEFAULT_HOST = "127.0.0.1"  # server.js listens here unless BULL_BOARD_HOST says otherwise


def loopback(host: str) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def main() -> int:
    """Print the JSON, or explain on stderr why the board must not start."""
    settings = Settings.from_env()
    host = os.environ.get("BULL_BOARD_HOST") or DEFAULT_HOST
    weak = [p for p in settings.insecure_secrets() if p.startswith(f"{ENV_PREFIX}ADMIN_PASSWORD")]
    if weak and not loopback(host):
        print(
            f"refusing to start bull-board on BULL_BOARD_HOST={host}: {weak[0]};"
            f" set a real {ENV_PREFIX}ADMIN_PASSWORD or keep it on loopback",
            file=sys.stderr,
        )
        return 2
    print(json.dumps({
        "redisUrl": settings.redis_url,
        "prefix": settings.queue_prefix,
        "queues": list(queue_specs(settings)),
        "user": settings.admin_user,
        "password": settings.admin_password,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
