"""The periodic jobs' entry points: at most once per schedule, never two at once.

Beat sends the cleaner at `CLEANER_SCHEDULE_TIME` (UTC) every day. Two beats (a
misconfigured fleet, a rollout) send it twice: the first task to claim the day's slot in
Redis cleans, any other skips. A Redis lock also keeps a manual run from overlapping a
scheduled one. The stuck-run reaper needs neither: its state change is guarded.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from celery import Celery

from shared.db import Database
from shared.housekeeping import retention
from shared.logs.archive import LogArchive
from shared.runs import stuck_runs
from shared.settings import Settings

log = logging.getLogger(__name__)

SLOT_KEY = "codeactions:housekeeping:cleaner:slot:{slot}"
LOCK_KEY = "codeactions:housekeeping:cleaner:lock"
LOCK_SECONDS = 6 * 3600  # a crashed cleaner's lock expires by itself


def current_slot(schedule_time: str, now: datetime) -> str:
    """The latest scheduled time at or before `now`, e.g. `2026-11-29T01:00`."""
    hour, minute = (int(part) for part in schedule_time.split(":"))
    at = now.astimezone(UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
    if at > now:
        at -= timedelta(days=1)
    return at.strftime("%Y-%m-%dT%H:%M")


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_cleaner(
    settings: Settings,
    db: Database,
    redis_client: redis.Redis,
    archive: LogArchive,
    *,
    scheduled: bool = True,
    retention_days: float | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Clean once; `scheduled` runs claim today's slot first. Returns what happened."""
    now = now or datetime.now(UTC)
    me = owner()
    slot = current_slot(settings.cleaner_schedule_time, now) if scheduled else None
    if slot is not None:
        key = SLOT_KEY.format(slot=slot)
        if not redis_client.set(key, me, nx=True, ex=3 * 86400):
            holder = redis_client.get(key)
            holder = holder.decode() if isinstance(holder, bytes) else holder
            log.info("cleaner skipped: slot %s already claimed by %s", slot, holder,
                     extra={"event": "cleaner.skipped", "slot": slot, "claimed_by": holder})
            return {"skipped": True, "slot": slot, "claimed_by": holder}
    lock = redis_client.lock(LOCK_KEY, timeout=LOCK_SECONDS)
    if not lock.acquire(blocking=False):
        log.info("cleaner skipped: another cleaner is running",
                 extra={"event": "cleaner.skipped", "slot": slot})
        return {"skipped": True, "slot": slot, "claimed_by": "a running cleaner"}
    try:
        days = settings.cleaner_retention_period if retention_days is None else retention_days
        cutoff = now - timedelta(days=days)
        report = retention.clean(db, archive, cutoff, settings.cleaner_batch_size)
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:  # expired while we worked: nothing to undo
            pass
    result = {"skipped": False, "slot": slot, "by": me, **vars(report)}
    log.info("cleaner done: %d runs, %d logs, %d objects before %s", report.runs, report.logs,
             report.objects, report.cutoff, extra={"event": "cleaner.done", "result": result})
    return result


def run_reaper(
    settings: Settings, db: Database, redis_client: redis.Redis, celery: Celery
) -> list[str]:
    reaped = stuck_runs.reap(db, redis_client, settings.stuck_run_margin, celery)
    if reaped:
        log.warning("ended %d lost runs", len(reaped),
                    extra={"event": "reaper.done", "runs": [str(r) for r in reaped]})
    return [str(run_id) for run_id in reaped]
