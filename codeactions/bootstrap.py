"""The composition root: each process (API, worker, beat, events consumer, a one-off command)
builds its `Platform` here, once, and hands it to its factory."""

from __future__ import annotations

import redis

from shared.after_commit.handlers import step_expiries, step_handlers
from shared.after_commit.runner import AfterCommitRunner
from shared.db import Database
from shared.logs.archive import LogArchive
from shared.messaging.celery_app import make_celery
from shared.platform import Platform
from shared.settings import Settings, load_settings


def bootstrap(settings: Settings | None = None) -> Platform:
    """Connects to nothing: every client connects on first use."""
    settings = settings or load_settings()
    db = Database(settings)
    redis_client = redis.Redis.from_url(
        settings.redis, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30
    )
    celery = make_celery(settings)
    archive = LogArchive(settings)
    runner = AfterCommitRunner(
        db, step_handlers(celery, redis_client, db, archive), step_expiries()
    )
    return Platform(settings, db, redis_client, celery, archive, runner)
