"""Create a run and hand it to its language's queue: commit first, enqueue after."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from shared.callbacks import delivery as callback_delivery
from shared.codes.model import Code
from shared.db import Database
from shared.errors import PayloadTooLarge, Saturated, Unavailable
from shared.messaging.queue_depth import QueueDepth
from shared.messaging.tasks import RUN_CODE, run_queue
from shared.observability import metrics
from shared.runs import store as run_store
from shared.runs.model import FAILED, QUEUED, CodeRun

log = logging.getLogger(__name__)


def check_body(body: str, limit: int) -> None:
    """A run's request body over the limit is refused before anything is stored."""
    if len(body.encode()) > limit:
        raise PayloadTooLarge(f"request body is too large (at most {limit} bytes)", "body")


def ensure_capacity(depth: QueueDepth, language: str, limit: int) -> None:
    """Refuse new runs while the language's queue holds more than `limit` (SPEC: 503 rather
    than queueing without bound). An unknown depth (broker down) lets the enqueue decide."""
    try:
        waiting = depth.ready_messages(language)
    except Exception as exc:  # the queue may not exist yet, or the broker blinked
        log.warning("queue depth of %s unknown: %s", language, exc)
        return
    if waiting > limit:
        metrics.record_rejected(language)
        raise Saturated(
            f"too many {language} runs are waiting ({waiting}); try again shortly",
            retry_after=max(1, min(30, waiting // max(1, limit or 1))),
        )


@dataclass
class RunRequest:
    """Everything a new run is made of (what a sync call takes from its HTTP request)."""

    code: Code
    params: dict[str, Any] = field(default_factory=dict)
    body: str = ""
    headers: dict[str, list[str]] = field(default_factory=dict)
    callback_url: str | None = None


def create_run(db: Database, request: RunRequest) -> CodeRun:
    return create_runs(db, [request])[0]


def create_runs(db: Database, requests: list[RunRequest]) -> list[CodeRun]:
    """All the runs in one transaction: a batch is created whole or not at all."""
    runs = [
        CodeRun(
            id=uuid.uuid4(),
            code_id=item.code.id,
            code_mongo_id=item.code.mongo_object_id,
            status=QUEUED,
            params=item.params,
            body=item.body,
            headers=item.headers,
            extra={},
            result="",
            callback=callback_delivery.new_callback(item.callback_url)
            if item.callback_url else None,
        )
        for item in requests
    ]
    with db.session() as session:
        for run in runs:
            run_store.add(session, run)
        session.commit()
    for item in requests:
        metrics.record_run_requested(item.code.project_uuid, item.code.id)
    return runs


def enqueue_all(db: Database, celery: Celery, runs: list[tuple[CodeRun, str]]) -> None:
    """Enqueue in order; if the broker fails midway, the rest end failed too, none stuck."""
    for index, (run, language) in enumerate(runs):
        try:
            enqueue(db, celery, run, language)
        except Unavailable:
            for rest, _ in runs[index + 1 :]:
                _mark_not_enqueued(db, rest.id)
            raise


def enqueue(db: Database, celery: Celery, run: CodeRun, language: str) -> None:
    """Publish the run's task; if the broker refuses, the run ends failed, not stuck queued."""
    try:
        celery.send_task(
            RUN_CODE, args=[str(run.id)], queue=run_queue(language), routing_key=run_queue(language)
        )
    except Exception as exc:  # kombu raises many types; all mean "not enqueued"
        log.error("enqueue failed for run %s: %s", run.id, exc)
        _mark_not_enqueued(db, run.id)
        raise Unavailable("the run queue is unavailable, try again later") from exc
    metrics.record_submitted(language)


def _mark_not_enqueued(db: Database, run_id: uuid.UUID) -> None:
    with db.session() as session:
        run_store.finish(
            session, run_id, FAILED, from_status=QUEUED,
            result="could not enqueue the run: broker unavailable", exit_reason="enqueue_failed",
        )
        session.commit()
