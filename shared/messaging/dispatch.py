"""Publishing run tasks: one message per run, on its language's queue.

One run is published with a publisher confirm (the broker has it when this returns). Several
(a batch) are published in one AMQP transaction: the broker delivers all of them at the
commit or none, so a broker failing midway never leaves part of a batch running.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import kombu
from celery import Celery

from shared.messaging.tasks import CALLBACK_QUEUE, DELIVER_CALLBACK, RUN_CODE, run_queue

#: Seconds a publish (connect, send, confirm or commit) may take before it counts as failed.
PUBLISH_TIMEOUT = 5.0


def publish_runs(celery: Celery, runs: Sequence[tuple[uuid.UUID, str]]) -> None:
    """Publish (run id, language) pairs; raises if the broker did not take all of them."""
    if len(runs) == 1:
        (run_id, language), = runs
        _send_run(celery, run_id, language)
        return
    # A connection of its own: transactions and publisher confirms exclude each other on a
    # channel, and the app's pooled connections are in confirm mode.
    with kombu.Connection(celery.conf.broker_url, connect_timeout=PUBLISH_TIMEOUT) as conn:
        channel = conn.channel()
        channel.tx_select()
        producer = kombu.Producer(channel)
        for run_id, language in runs:
            _send_run(celery, run_id, language, producer=producer)
        channel.tx_commit()


def _send_run(celery: Celery, run_id: uuid.UUID, language: str, **options: object) -> None:
    queue = run_queue(language)
    celery.send_task(RUN_CODE, args=[str(run_id)], queue=queue, routing_key=queue,
                     **options)


def publish_callback(celery: Celery, run_id: uuid.UUID, countdown: float = 0) -> None:
    """Hand a run's callback delivery to the workers; raises if the broker refused it."""
    celery.send_task(
        DELIVER_CALLBACK, args=[str(run_id)], queue=CALLBACK_QUEUE, routing_key=CALLBACK_QUEUE,
        countdown=countdown or None,
    )
