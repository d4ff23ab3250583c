"""Cancel a run: a queued run never starts; a started one is killed by its worker."""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis

from shared.errors import Conflict, NotFound, Unavailable
from shared.ids import EntityId
from shared.runs import cancel_flag
from shared.runs import store as run_store
from shared.runs.ending import after_end
from shared.runs.model import CodeRun
from shared.runs.statuses import FINISHED, ExitReason, RunStatus

if TYPE_CHECKING:
    from shared.platform import Platform


def cancel(platform: Platform, run_id: EntityId) -> CodeRun:
    """Returns the run as it stands; `Conflict` if it had already ended otherwise."""
    with platform.unit_of_work() as uow:
        run = run_store.get(uow.session, run_id)
        if run is None:
            raise NotFound("run not found")
        # Only a still-queued run can be ended here; the worker's claim then finds it taken.
        ended = run_store.finish(
            uow.connection, run.id, RunStatus.FAILED, from_status=RunStatus.QUEUED,
            result=ExitReason.CANCELLED, exit_reason=ExitReason.CANCELLED,
        )
        if ended:  # no worker will touch this run: wake its waiters, send its callback
            after_end(uow, run.id, RunStatus.FAILED, ended.wants_callback)
        uow.commit()
        uow.session.refresh(run)
    if ended:
        return run
    if run.status in FINISHED:
        if run.exit_reason != ExitReason.CANCELLED:  # a second cancel changes nothing
            raise Conflict(f"run already {run.status}", field="status")
        return run
    try:
        cancel_flag.request_cancel(platform.redis, str(run.id))
    except redis.RedisError as exc:
        raise Unavailable("cannot reach the running run's worker (Redis unavailable)") from exc
    return run
