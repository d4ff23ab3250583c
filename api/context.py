"""What the API's handlers share: settings and connections, made once per app."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery
from flask import current_app

from api.rate_limit import CodeRateLimiter
from shared.db import Database
from shared.logs.archive import LogArchive
from shared.messaging.queue_depth import QueueDepth
from shared.settings import Settings


@dataclass
class ApiContext:
    settings: Settings
    db: Database
    redis: redis.Redis
    celery: Celery
    limiter: CodeRateLimiter
    archive: LogArchive
    queue_depth: QueueDepth


def ctx() -> ApiContext:
    return current_app.extensions["codeactions"]
