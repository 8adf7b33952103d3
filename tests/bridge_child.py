"""An email worker in a process of its own, for the kill -9 test (`python bridge_child.py CONFIG`).

CONFIG is JSON: redis_url, smtp_port, prefix, queue, lock_ms, stalled_ms, mode, marker, db_url.
mode "before-send" stalls before the mail is handed to SMTP, "after-send" right after it,
each after writing the marker file, so the test knows when to kill; "hang" stalls in every
job, appending each job id to the marker file. Optional: concurrency.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.job import Job
from bridge.runtime import BridgeWorker
from mail.processor import EmailProcessor
from orderflow.db import make_engine
from orderflow.settings import Settings
from workers.queues import email_spec


def _mark(marker: Path, job_id: str) -> None:
    marker.write_text(job_id)


def _append(marker: Path, job_id: str) -> None:
    with marker.open("a") as out:
        out.write(job_id + "\n")


async def main(config: dict[str, Any]) -> None:
    settings = Settings(
        redis_url=config["redis_url"], smtp_port=config["smtp_port"], queue_prefix=config["prefix"]
    )
    spec = email_spec(settings).with_(
        prefix=config["prefix"], name=config["queue"], lock_duration_ms=config["lock_ms"],
        stalled_interval_ms=config["stalled_ms"], rate_limit=None,
        concurrency=config.get("concurrency", 5),
    )  # fmt: skip
    email = EmailProcessor(settings, spec, make_engine(config["db_url"]))
    marker = Path(config["marker"])

    async def stalling(job: Job) -> Any:
        if config["mode"] == "hang":
            _append(marker, job.id)
            await asyncio.sleep(600)  # hang with the job until the test kills this process
        if config["mode"] == "before-send":
            _mark(marker, job.id)
            await asyncio.sleep(600)  # hang mid-job until the test kills this process
        result = await email(job)
        if config["mode"] == "after-send":
            _mark(marker, job.id)
            await asyncio.sleep(600)  # hang after the send until the test kills this process
        return result

    await BridgeWorker(spec, stalling, settings.redis_url).run(asyncio.Event())


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
