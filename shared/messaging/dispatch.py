"""Publishing run tasks: one message per run, on its language's queue.

One run is published with a publisher confirm (the broker has it when this returns). Several
(a batch) are published in one AMQP transaction: the broker delivers all of them at the
commit or none, so a broker failing midway never leaves part of a batch running.
"""

from __future__ import annotations

import functools
import os
import socket
import uuid
from collections.abc import Sequence
from typing import Any

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
            _send_run(celery, run_id, language, transaction=producer)
        channel.tx_commit()


def _send_run(
    celery: Celery, run_id: uuid.UUID, language: str, transaction: kombu.Producer | None = None
) -> None:
    """Publish the run's task message (`run_message`) on its language's queue, or on a
    batch's AMQP `transaction`, where a publish is not retried (kombu would retry it on a new
    channel, outside the transaction: the batch fails whole instead)."""
    queue = celery.amqp.queues[run_queue(language)]
    task_id = str(uuid.uuid4())
    headers, body = run_message(run_id, task_id)
    with celery.producer_or_acquire(transaction) as publisher:
        publisher.publish(
            body, exchange=queue.exchange, routing_key=queue.routing_key, serializer="json",
            headers=headers, correlation_id=task_id, reply_to="", delivery_mode=2,
            declare=[queue], retry=transaction is None,
            retry_policy=celery.conf.task_publish_retry_policy,
        )


def run_message(run_id: uuid.UUID, task_id: str) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """The headers and body `celery.send_task(RUN_CODE, args=[run_id])` would publish
    (Celery's message protocol 2, which the worker's consumer reads), built here without its
    per-call routing, signals and option merging: on the API's hot path those were two
    thirds of a publish's CPU."""
    args = [str(run_id)]
    headers: dict[str, Any] = {
        "lang": "py", "task": RUN_CODE, "id": task_id, "shadow": None, "eta": None,
        "expires": None, "group": None, "group_index": None, "retries": 0,
        "timelimit": [None, None], "root_id": task_id, "parent_id": None,
        "argsrepr": repr(args), "kwargsrepr": "{}", "origin": f"{os.getpid()}@{_host()}",
        "ignore_result": True, "replaced_task_nesting": 0, "stamped_headers": None,
        "stamps": {},
    }
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    return headers, (args, {}, embed)


@functools.cache
def _host() -> str:
    """The `origin` header's host (pid@host): the pid is read per message, a forked process
    has its own."""
    return socket.gethostname()


def publish_callback(celery: Celery, run_id: uuid.UUID, countdown: float = 0) -> None:
    """Hand a run's callback delivery to the workers; raises if the broker refused it."""
    celery.send_task(
        DELIVER_CALLBACK, args=[str(run_id)], queue=CALLBACK_QUEUE, routing_key=CALLBACK_QUEUE,
        countdown=countdown or None,
    )
