"""Celery tasks: fixed names, ids in, the work done by a service."""

from __future__ import annotations

from celery import Celery

from shared.tasks import DELIVER_CALLBACK, RUN_CODE


def register(app: Celery) -> None:
    @app.task(name=RUN_CODE, bind=True, acks_late=True, reject_on_worker_lost=True)
    def run_code(self, run_id: str) -> str | None:  # noqa: ANN001
        return app.conf.codeactions_context.executor().execute(run_id)

    @app.task(name=DELIVER_CALLBACK, bind=True, acks_late=True, reject_on_worker_lost=True,
              max_retries=None)
    def deliver_callback(self, run_id: str) -> None:  # noqa: ANN001
        context = app.conf.codeactions_context
        delay = context.callback_sender().deliver(run_id, attempt=self.request.retries + 1)
        if delay is not None:  # the attempt count lives on the run; retries just re-send
            raise self.retry(countdown=delay)
