"""Celery tasks: fixed names, ids in, the work done by a service."""

from __future__ import annotations

from celery import Celery

from shared import log_context
from shared.tasks import RUN_CODE


def register(app: Celery) -> None:
    @app.task(name=RUN_CODE, bind=True, acks_late=True, reject_on_worker_lost=True)
    def run_code(self, run_id: str) -> str | None:  # noqa: ANN001
        with log_context.bound(run_id=run_id):
            return app.conf.codeactions_context.executor().execute(run_id)
