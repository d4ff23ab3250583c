"""Where the Celery app and the rest of the platform meet: one factory, used by both sides.

The API only sends tasks by name; the worker registers them (worker/tasks.py).
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from shared.messaging.tasks import CALLBACK_QUEUE, run_queue
from shared.settings import LANGUAGES, Settings


def make_celery(settings: Settings) -> Celery:
    app = Celery("codeactions", broker=settings.celery_broker_url)
    app.conf.update(
        # At-least-once delivery: ack after the task body ran, requeue when a worker dies,
        # and take one message at a time so a busy worker never hoards runs.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_queues=[
            *(Queue(run_queue(lang), routing_key=run_queue(lang)) for lang in LANGUAGES),
            # Its own exchange, like every non-run queue: bound to the default one it
            # would share the runs' exchange.
            Queue(CALLBACK_QUEUE, Exchange(CALLBACK_QUEUE), routing_key=CALLBACK_QUEUE),
        ],
        task_default_queue=run_queue("python"),
        task_create_missing_queues=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"confirm_publish": True},
        worker_hijack_root_logger=False,
        # Task events cost a broker message (with its confirm) per task state, on the API and
        # the worker: off unless asked for. Flower turns the workers' on while it watches.
        worker_send_task_events=settings.task_events,
        task_send_sent_event=settings.task_events,
    )
    app.conf.codeactions_settings = settings
    return app
