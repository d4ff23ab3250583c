"""Create a run and hand it to its language's queue: commit first, enqueue after."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Celery

from shared.db import Database
from shared.errors import Unavailable
from shared.models import Code, CodeRun
from shared.models.coderun import FAILED, QUEUED
from shared.stores import run_store
from shared.tasks import RUN_CODE, run_queue

log = logging.getLogger(__name__)


def create_run(
    db: Database,
    code: Code,
    params: dict[str, Any],
    body: str,
    headers: dict[str, list[str]],
) -> CodeRun:
    run = CodeRun(
        id=uuid.uuid4(),
        code_id=code.id,
        code_mongo_id=code.mongo_object_id,
        status=QUEUED,
        params=params,
        body=body,
        headers=headers,
        extra={},
        result="",
    )
    with db.session() as session:
        run_store.add(session, run)
        session.commit()
    return run


def enqueue(db: Database, celery: Celery, run: CodeRun, language: str) -> None:
    """Publish the run's task; if the broker refuses, the run ends failed, not stuck queued."""
    try:
        celery.send_task(
            RUN_CODE, args=[str(run.id)], queue=run_queue(language), routing_key=run_queue(language)
        )
    except Exception as exc:  # kombu raises many types; all mean "not enqueued"
        log.error("enqueue failed for run %s: %s", run.id, exc)
        with db.session() as session:
            stored = session.get(CodeRun, run.id)
            if stored is not None and stored.status == QUEUED:
                stored.status = FAILED
                stored.result = "could not enqueue the run: broker unavailable"
                stored.extra = {"exit_reason": "enqueue_failed"}
                session.commit()
        raise Unavailable("the run queue is unavailable, try again later") from exc
