"""Celery tasks: fixed names, ids in, the work done by a service."""

from __future__ import annotations

import logging

from celery import Celery

from shared import log_context
from shared.tasks import RUN_CODE

log = logging.getLogger(__name__)


def register(app: Celery) -> None:
    @app.task(name=RUN_CODE, bind=True, acks_late=True, reject_on_worker_lost=True)
    def run_code(self, run_id: str) -> str | None:  # noqa: ANN001
        # Every log line of this run carries its run id (and code id, once known).
        with log_context.bound(run_id=run_id):
            status = app.conf.codeactions_context.executor().execute(run_id)
            log.info("run %s", status or "skipped (not ours to execute)")
            return status
