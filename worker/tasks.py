"""Celery tasks: fixed names, ids in, the work done by a service."""

from __future__ import annotations

import logging

from celery import Celery

from shared.messaging.tasks import DELIVER_CALLBACK, RUN_CODE
from shared.observability import log_context
from worker.project_concurrency import retry_delay

log = logging.getLogger(__name__)


def register(app: Celery) -> None:
    # max_retries=None: a run waiting for its project's slot is retried until it gets one.
    @app.task(name=RUN_CODE, bind=True, acks_late=True, reject_on_worker_lost=True,
              max_retries=None)
    def run_code(self, run_id: str) -> str | None:  # noqa: ANN001
        context = app.conf.codeactions_context
        # Every log line of this run carries its run id (and code id, once known).
        with log_context.bound(run_id=run_id):
            with context.project_gate().admit(run_id) as admitted:
                if not admitted:  # its project is at its cap: stay queued, try again shortly
                    raise self.retry(countdown=retry_delay(self.request.retries))
                status = context.executor().execute(run_id)
            log.info("run %s", status or "skipped (not ours to execute)")
            return status

    @app.task(name=DELIVER_CALLBACK, bind=True, acks_late=True, reject_on_worker_lost=True,
              max_retries=None)
    def deliver_callback(self, run_id: str) -> None:  # noqa: ANN001
        context = app.conf.codeactions_context
        with log_context.bound(run_id=run_id):
            delay = context.callback_sender().deliver(run_id, attempt=self.request.retries + 1)
        if delay is not None:  # the attempt count lives on the run; retries just re-send
            raise self.retry(countdown=delay)
