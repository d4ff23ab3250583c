"""Run callbacks: when a run ends, a worker POSTs it to the caller's URL, retrying with
backoff; every attempt is recorded on the run (`callback.attempts`).

The API only stores the URL and, when it ends a run itself (cancelling a queued run),
schedules the delivery; the sending is always done by a worker (worker/callback_sender.py).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from celery import Celery

from shared.db import Database
from shared.messaging.tasks import CALLBACK_QUEUE, DELIVER_CALLBACK
from shared.runs import store as run_store
from shared.runs.model import FINISHED, CodeRun

log = logging.getLogger(__name__)

PENDING, DELIVERED, GAVE_UP = "pending", "delivered", "failed"
MAX_DELAY_SECONDS = 600.0


def new_callback(url: str) -> dict[str, Any]:
    """What a run stores when its caller asked for a callback."""
    return {"url": url, "status": PENDING, "attempts": []}


def schedule(celery: Celery, run_id: uuid.UUID | str, countdown: float = 0) -> None:
    """Hand the delivery to the workers. A broker failure is logged, not raised: the run
    itself has ended and is stored; only its notification is late (the run stays
    `callback.status = pending`, visible to whoever polls)."""
    try:
        celery.send_task(
            DELIVER_CALLBACK, args=[str(run_id)], queue=CALLBACK_QUEUE,
            routing_key=CALLBACK_QUEUE, countdown=countdown or None,
        )
    except Exception as exc:  # kombu raises many types; all mean "not enqueued"
        log.error("callback of run %s not scheduled: %s", run_id, exc)


def retry_delay(attempt: int, first_delay: float) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): doubling."""
    return min(MAX_DELAY_SECONDS, first_delay * 2 ** (attempt - 1))


def pending_run(db: Database, run_id: uuid.UUID) -> CodeRun | None:
    """The run if it has ended and its callback still waits for delivery."""
    with db.session() as session:
        run = session.get(CodeRun, run_id)
    if run is None or run.status not in FINISHED:
        return None
    if not run.callback or run.callback.get("status") != PENDING:
        return None
    return run


def record_attempt(
    db: Database,
    run_id: uuid.UUID,
    attempt: int,
    max_attempts: int,
    *,
    status_code: int | None,
    error: str | None,
    duration_ms: int,
) -> str:
    """Store one attempt; returns the callback's status after it."""
    delivered = error is None
    status = DELIVERED if delivered else (GAVE_UP if attempt >= max_attempts else PENDING)
    entry = {
        "attempt": attempt,
        "at": datetime.now(UTC).isoformat(),
        "status_code": status_code,
        "error": error,
        "duration_ms": duration_ms,
    }
    with db.session() as session:
        recorded = run_store.record_callback_attempt(session, run_id, entry, status)
        session.commit()
    return status if recorded else GAVE_UP
