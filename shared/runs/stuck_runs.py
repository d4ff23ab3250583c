"""Runs left `started` by a worker that died end `failed`, with the reason.

A worker SIGKILLed (or its node lost) mid-run never writes the outcome; the broker
redelivers the task, but the run is already claimed, so nobody would ever finish it.
Past its code's timeout plus a margin no live worker can still be executing it. The
state change is the same guarded `started → failed` as the worker's own, so whichever
writes first wins and a late worker cannot bring the run back.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Celery

from shared.callbacks import delivery as callback_delivery
from shared.db import Database
from shared.logs import store as log_store
from shared.runs import completion
from shared.runs import store as run_store
from shared.runs.model import FAILED, STARTED

log = logging.getLogger(__name__)

EXIT_REASON = "worker_lost"


def reason_for(worker: str | None) -> str:
    who = f"worker {worker}" if worker else "its worker"
    return f"the run was lost: {who} stopped before finishing it"


def reap(
    db: Database,
    redis_client: redis.Redis,
    margin_seconds: int,
    celery: Celery,
    limit: int = 500,
) -> list[uuid.UUID]:
    """Fail the stuck runs (up to `limit` per call), signal their waiters and schedule their
    callbacks; returns their ids."""
    reaped: list[uuid.UUID] = []
    call_back: list[uuid.UUID] = []
    error_logs: list[dict[str, Any]] = []
    with db.session() as session:
        stuck = run_store.stuck_started(session, margin_seconds, limit)
        for run_id, code_id, worker, wants_callback in stuck:
            message = reason_for(worker)
            finished = run_store.finish(
                session, run_id, FAILED, from_status=STARTED, result=message,
                exit_reason=EXIT_REASON,
                extra={"status_code": 500, "content_type": "json", "error": message},
            )
            if finished:
                now = datetime.now(UTC)
                error_logs.append({
                    "id": uuid.uuid4(), "run_id": run_id, "code_id": code_id, "type": "error",
                    "content": message, "seq": 0, "created_at": now, "updated_at": now,
                })
                reaped.append(run_id)
                if wants_callback:
                    call_back.append(run_id)
        log_store.add_batch(session, error_logs)
        session.commit()
    for run_id in reaped:
        log.warning("run ended as lost", extra={"run_id": str(run_id)})
        try:
            completion.publish_done(redis_client, str(run_id), FAILED)
        except redis.RedisError as exc:  # waiters re-read the row at their timeout
            log.warning("completion signal for run %s not sent: %s", run_id, exc)
    for run_id in call_back:  # a lost run still tells its caller it ended
        callback_delivery.schedule(celery, run_id)
    return reaped
