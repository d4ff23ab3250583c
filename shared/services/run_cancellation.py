"""Cancel a run: a queued run never starts; a started one is killed by its worker."""

from __future__ import annotations

import uuid

import redis
from sqlalchemy import func, update

from shared import cancellation, completion
from shared.db import Database
from shared.errors import Conflict, NotFound
from shared.ids import EntityId
from shared.models import CodeRun
from shared.models.coderun import FAILED, FINISHED, QUEUED
from shared.stores import run_store

CANCELLED = "cancelled"


def cancel(db: Database, redis_client: redis.Redis, run_id: EntityId) -> CodeRun:
    """Returns the run as it stands; `Conflict` if it had already ended otherwise."""
    with db.session() as session:
        run = run_store.get(session, run_id)
        if run is None:
            raise NotFound("run not found")
        rid: uuid.UUID = run.id
        # Only a still-queued run can be ended here; the worker's claim then finds it taken.
        ended_here = session.execute(
            update(CodeRun)
            .where(CodeRun.id == rid, CodeRun.status == QUEUED)
            .values(status=FAILED, result=CANCELLED, exit_reason=CANCELLED,
                    finished_at=func.now(), updated_at=func.now())
            .returning(CodeRun.id)
        ).first()
        session.commit()
    if ended_here:
        completion.publish_done(redis_client, str(rid), FAILED)
    else:
        with db.session() as session:
            run = session.get(CodeRun, rid)
        if run.status in FINISHED:
            if run.exit_reason == CANCELLED:
                return run  # a second cancel changes nothing
            raise Conflict(f"run already {run.status}", field="status")
        cancellation.request_cancel(redis_client, str(rid))
    with db.session() as session:
        return session.get(CodeRun, rid)
