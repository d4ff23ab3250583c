"""What the API's handlers share: the process's platform, and the API's own parts."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery
from flask import current_app

from api.rate_limit import CodeRateLimiter
from shared.db import Database
from shared.logs.archive import LogArchive
from shared.messaging.queue_depth import QueueDepth
from shared.platform import Platform
from shared.settings import Settings


@dataclass(frozen=True)
class ApiContext:
    platform: Platform
    limiter: CodeRateLimiter
    queue_depth: QueueDepth

    @property
    def settings(self) -> Settings:
        return self.platform.settings

    @property
    def db(self) -> Database:
        return self.platform.db

    @property
    def redis(self) -> redis.Redis:
        return self.platform.redis

    @property
    def celery(self) -> Celery:
        return self.platform.celery

    @property
    def archive(self) -> LogArchive:
        return self.platform.archive


def ctx() -> ApiContext:
    return current_app.extensions["codeactions"]
