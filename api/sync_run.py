"""Run a code and wait for it: create the run, subscribe, enqueue, wait for the signal."""

from __future__ import annotations

import functools
import time
import uuid
from dataclasses import dataclass
from typing import Any

from api.client_connection import ClientConnection
from api.context import ApiContext
from api.request_input import first_query_values, header_lists, raw_body
from shared.codes import service as code_service
from shared.codes.model import Code
from shared.errors import Conflict, Gone, NotFound, Unavailable
from shared.ids import EntityId
from shared.observability import log_context, metrics
from shared.runs import cancellation as run_cancellation
from shared.runs import reading as run_reading
from shared.runs import signal_record
from shared.runs import submission as run_submission
from shared.runs.completion import CompletionWaiter
from shared.runs.model import CodeRun
from shared.runs.statuses import FINISHED, ExitReason, RunStatus
from shared.settings import LANGUAGES
from shared.storable import ensure_storable


@dataclass
class SyncOutcome:
    code: Code
    run: CodeRun
    timed_out: bool
    abandoned: bool = False  # the caller went away; the run was cancelled


def run_and_wait(c: ApiContext, code_ref: EntityId, code_type: str | None = None) -> SyncOutcome:
    """Run the code `code_ref` names (`NotFound` unless it exists, of type `code_type` if
    given) and wait for the run's end, or its code's timeout."""
    body = raw_body()
    run_submission.check_body(body, c.settings.request_body_max_bytes)
    headers = header_lists()
    # The query was checked for every route (api/request_input.py).
    ensure_storable(body, "body")
    ensure_storable(headers, "headers")
    limit = c.settings.worker_pool_queue_size
    if run_submission.any_over_capacity(c.queue_depth, LANGUAGES, limit):
        # Some queue is full: read the code to know whether it is this call's (a code of
        # another type is 404 first, as it would be without a full queue).
        code = code_service.get(c.db, code_ref)
        if code_type is not None and code.type != code_type:
            raise NotFound("code not found")
        run_submission.ensure_capacity(c.queue_depth, code.language, limit)
    begun = time.monotonic()
    call = run_submission.CallRequest(
        code_ref, code_type, params=first_query_values(), body=body.strip(), headers=headers
    )
    log_context.bind(run_id=call.run_id)
    client = ClientConnection.of_request()
    # Listen before the run exists: its end cannot be signalled before we listen.
    ended = functools.partial(run_reading.has_ended, c.db, call.run_id)
    with CompletionWaiter(c.redis, str(call.run_id), ended) as waiter:
        code, run = run_submission.submit_call(c.platform, call)
        waiter.wait(timeout=float(code.timeout), should_stop=client.gone)
    if client.closed:
        return SyncOutcome(code, run=_abandon(c, run), timed_out=False, abandoned=True)
    # The worker's signal carries the ended row; without it (lost, or from elsewhere) the
    # row is read: it is the truth.
    stored = _outcome(c, run.id, waiter.record)
    timed_out = stored.status not in FINISHED
    if stored.status == RunStatus.QUEUED:  # not even started: nobody will read its answer
        stored = _abandon(c, stored)
    metrics.record_run_elapsed(code.project_uuid, code.id, time.monotonic() - begun)
    return SyncOutcome(code, run=stored, timed_out=timed_out)


def _abandon(c: ApiContext, run: CodeRun) -> CodeRun:
    """Nobody waits for this run any more: stop it (unless it has just ended)."""
    try:
        return run_cancellation.cancel(c.platform, EntityId(uuid=run.id))
    except (Conflict, Unavailable):  # ended meanwhile, or its worker is out of reach
        return _outcome(c, run.id)


def wait_for_end(c: ApiContext, run: CodeRun, timeout: float) -> CodeRun:
    """The run as soon as it ends, or as it is after `timeout` seconds."""
    if timeout <= 0 or run.status in FINISHED:
        return run
    # Subscribe, then re-read: a run that ended in between is not missed.
    ended = functools.partial(run_reading.has_ended, c.db, run.id)
    with CompletionWaiter(c.redis, str(run.id), ended) as waiter:
        run = _read(c, run.id)
        if run.status not in FINISHED:
            waiter.wait(timeout=timeout)
            run = _read(c, run.id)
    return run


def _outcome(
    c: ApiContext, run_id: uuid.UUID, record: dict[str, Any] | None = None
) -> CodeRun:
    """The run a sync caller waited for; 410 when its code was deleted meanwhile."""
    run = signal_record.to_run(record) if record else None
    if run is None or run.id != run_id:
        run = run_reading.reread(c.db, run_id)
    if run is None or run.exit_reason == ExitReason.CODE_DELETED:
        raise Gone("the code was deleted while its run was waiting", field="code_id")
    return run


def _read(c: ApiContext, run_id: uuid.UUID) -> CodeRun:
    run = run_reading.reread(c.db, run_id)
    if run is None:
        raise NotFound("run not found")
    return run
