"""The per-project cap, applied to a run before the worker claims it
(`FLOWS_CODE_ACTIONS_PROJECT_MAX_CONCURRENT_RUNS`, off when 0).

A run whose project has every slot taken stays `queued` (so it can still be cancelled) and
its task is retried after a short, growing delay, which leaves the worker free for other
projects' runs. While a run executes, a thread renews its slot's lease; if the worker dies
the lease runs out and the slot frees itself (shared/runs/project_slots.py). If Redis cannot be
reached the cap is not enforced: runs go on, and the log says so.
"""

from __future__ import annotations

import logging
import random
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from shared.db import Database
from shared.runs import store as run_store
from shared.runs.project_slots import ProjectSlots
from shared.settings import Settings

log = logging.getLogger(__name__)


def retry_delay(retries: int) -> float:
    """Seconds before a capped run is tried again: 0.5, 1, 2, 4, then 5, with jitter."""
    return min(5.0, 0.5 * 2 ** retries) * random.uniform(0.8, 1.2)


class ProjectGate:
    def __init__(self, settings: Settings, db: Database, redis_client: redis.Redis) -> None:
        self.db = db
        limit = settings.project_max_concurrent_runs
        self.slots = ProjectSlots(redis_client, limit) if limit > 0 else None

    @contextmanager
    def admit(self, run_id: str) -> Iterator[bool]:
        """True: the run may execute now, holding its project's slot until the block ends.
        False: the project is at its cap; retry later."""
        project = self._project_of_queued_run(run_id) if self.slots else None
        if project is None:  # no cap, or the run is not queued (the executor will skip it)
            yield True
            return
        try:
            granted = self.slots.try_acquire(project, run_id)
        except redis.RedisError as exc:
            log.error("project cap not enforced for run %s: %s", run_id, exc)
            yield True
            return
        if not granted:
            yield False
            return
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(project, run_id, stop),
                                   name=f"slot-{run_id[:8]}", daemon=True)
        renewer.start()
        try:
            yield True
        finally:
            stop.set()
            renewer.join()
            try:
                self.slots.release(project, run_id)
            except redis.RedisError as exc:  # the lease runs out on its own
                log.warning("slot of run %s not released: %s", run_id, exc)

    def _renew(self, project: str, run_id: str, stop: threading.Event) -> None:
        while not stop.wait(self.slots.lease_seconds / 3):
            try:
                if not self.slots.renew(project, run_id):
                    log.warning("the project slot of run %s had expired", run_id)
            except redis.RedisError as exc:
                log.warning("slot of run %s not renewed: %s", run_id, exc)

    def _project_of_queued_run(self, run_id: str) -> str | None:
        with self.db.session() as session:
            project = run_store.project_of_queued(session, uuid.UUID(run_id))
        return str(project) if project else None
