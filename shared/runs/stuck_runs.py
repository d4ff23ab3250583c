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
from typing import TYPE_CHECKING, Any

from shared.logs import store as log_store
from shared.runs import store as run_store
from shared.runs.ending import after_end
from shared.runs.statuses import ExitReason, RunStatus

if TYPE_CHECKING:
    from shared.platform import Platform

log = logging.getLogger(__name__)

def reason_for(worker: str | None) -> str:
    who = f"worker {worker}" if worker else "its worker"
    return f"the run was lost: {who} stopped before finishing it"


def reap(platform: Platform, margin_seconds: int, limit: int = 500) -> list[uuid.UUID]:
    """Fail the stuck runs (up to `limit` per call); their waiters are woken and their
    callbacks sent after the commit. Returns their ids."""
    reaped: list[uuid.UUID] = []
    error_logs: list[dict[str, Any]] = []
    with platform.unit_of_work() as uow:
        stuck = run_store.stuck_started(uow.session, margin_seconds, limit)
        for run_id, code_id, worker, _ in stuck:
            message = reason_for(worker)
            ended = run_store.finish(
                uow.connection, run_id, RunStatus.FAILED, from_status=RunStatus.STARTED,
                result=message, exit_reason=ExitReason.WORKER_LOST,
                extra={"status_code": 500, "content_type": "json", "error": message},
            )
            if ended:
                now = datetime.now(UTC)
                error_logs.append({
                    "id": uuid.uuid4(), "run_id": run_id, "code_id": code_id, "type": "error",
                    "content": message, "seq": 0, "created_at": now, "updated_at": now,
                })
                reaped.append(run_id)
                after_end(uow, run_id, RunStatus.FAILED, ended.wants_callback)
        log_store.add_batch(uow.session, error_logs)
        uow.commit()
    for run_id in reaped:
        log.warning("run ended as lost", extra={"run_id": str(run_id)})
    return reaped
