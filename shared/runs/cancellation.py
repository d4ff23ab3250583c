"""Cancel a run: a queued run never starts; a started one is killed by its worker."""

from __future__ import annotations

import redis
from celery import Celery

from shared.callbacks import delivery as callback_delivery
from shared.db import Database
from shared.errors import Conflict, NotFound
from shared.ids import EntityId
from shared.runs import cancel_flag as cancellation
from shared.runs import completion
from shared.runs import store as run_store
from shared.runs.model import FAILED, FINISHED, QUEUED, CodeRun

CANCELLED = "cancelled"


def cancel(
    db: Database, redis_client: redis.Redis, celery: Celery, run_id: EntityId
) -> CodeRun:
    """Returns the run as it stands; `Conflict` if it had already ended otherwise."""
    with db.session() as session:
        run = run_store.get(session, run_id)
        if run is None:
            raise NotFound("run not found")
        # Only a still-queued run can be ended here; the worker's claim then finds it taken.
        ended_here = run_store.finish(
            session, run.id, FAILED, from_status=QUEUED, result=CANCELLED, exit_reason=CANCELLED
        )
        session.commit()
        session.refresh(run)
    if ended_here:
        completion.publish_done(redis_client, str(run.id), FAILED)
        if run.callback:  # no worker will touch this run: schedule its callback here
            callback_delivery.schedule(celery, run.id)
    elif run.status in FINISHED:
        if run.exit_reason != CANCELLED:  # a second cancel changes nothing
            raise Conflict(f"run already {run.status}", field="status")
    else:
        cancellation.request_cancel(redis_client, str(run.id))
    return run
