"""What every process of the platform holds, built once per process by its bootstrap
(codeactions/bootstrap.py) and handed to the API's, the worker's, beat's and the events
consumer's factories. Nothing in it is rewired after construction, and building it connects
to nothing: connections are made on first use."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery

from shared.after_commit.runner import AfterCommitRunner
from shared.db import Database
from shared.logs.archive import LogArchive
from shared.settings import Settings
from shared.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class Platform:
    settings: Settings
    db: Database
    redis: redis.Redis
    celery: Celery
    archive: LogArchive
    after_commit: AfterCommitRunner

    def unit_of_work(self, one_statement: bool = False) -> UnitOfWork:
        """A transaction whose after-commit steps this process runs (services own it);
        `one_statement`: the work is one statement (shared/unit_of_work.py)."""
        return UnitOfWork(self.db, self.after_commit, one_statement)
