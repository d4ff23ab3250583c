"""`codeactions beat`: Celery beat plus the small worker that executes its jobs.

The periodic jobs are the retention cleaner (daily at `CLEANER_SCHEDULE_TIME`, UTC) and the
stuck-run reaper (every `STUCK_RUN_CHECK_INTERVAL` seconds). They go to their own queue,
`housekeeping`, consumed by this process only, so run workers keep every slot for user code
and need no database-wide privileges. Run one per fleet (Kubernetes: one replica); a second
one is harmless (see `shared.housekeeping.jobs`).
"""

from __future__ import annotations

import threading
from pathlib import Path

from celery import Celery
from celery.schedules import crontab
from kombu import Exchange, Queue

from shared.messaging.celery_app import make_celery
from shared.messaging.tasks import CLEAN_RETENTION, HOUSEKEEPING_QUEUE, REAP_STUCK_RUNS
from shared.settings import Settings


class HousekeepingContext:
    """Connections of the beat process, made on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._parts: tuple | None = None

    def parts(self):  # noqa: ANN201 - (Database, redis.Redis, LogArchive)
        with self._lock:
            if self._parts is None:
                import redis

                from shared.db import Database
                from shared.logs.archive import LogArchive

                self._parts = (
                    Database(self.settings),
                    redis.Redis.from_url(self.settings.redis, socket_timeout=10),
                    LogArchive(self.settings),
                )
            return self._parts


def schedule_file(settings: Settings) -> Path:
    path = Path(settings.beat_schedule_file or Path(settings.state_dir) / "beat" / "schedule")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def create_beat_app(settings: Settings) -> Celery:
    app = make_celery(settings)
    hour, minute = settings.cleaner_schedule_time.split(":")
    interval = settings.stuck_run_check_interval
    app.conf.update(
        # Its own exchange: a queue without one would be bound to the default (runs.python)
        # exchange and receive copies of python runs.
        task_queues=[
            *app.conf.task_queues,
            Queue(HOUSEKEEPING_QUEUE, Exchange(HOUSEKEEPING_QUEUE), routing_key=HOUSEKEEPING_QUEUE),
        ],
        timezone="UTC",
        beat_schedule={
            "retention-cleaner": {
                "task": CLEAN_RETENTION,
                "schedule": crontab(hour=hour, minute=minute),
                "options": {"queue": HOUSEKEEPING_QUEUE, "expires": 12 * 3600},
            },
            "stuck-run-reaper": {
                "task": REAP_STUCK_RUNS,
                "schedule": interval,
                # A reaper that waited longer than its interval is superseded by the next.
                "options": {"queue": HOUSEKEEPING_QUEUE, "expires": max(1.0, interval)},
            },
        },
    )
    context = HousekeepingContext(settings)

    @app.task(name=CLEAN_RETENTION, ignore_result=True)
    def clean_retention() -> dict:
        from shared.housekeeping.jobs import run_cleaner

        return run_cleaner(settings, *context.parts())

    @app.task(name=REAP_STUCK_RUNS, ignore_result=True)
    def reap_stuck_runs() -> list[str]:
        from shared.housekeeping.jobs import run_reaper

        db, redis_client, _ = context.parts()
        return run_reaper(settings, db, redis_client, app)

    return app
