"""Run a code and wait for it: create the run, subscribe, enqueue, wait for the signal."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from api.client_connection import ClientConnection
from api.context import ApiContext
from api.request_input import first_query_values, header_lists, raw_body
from shared.codes.model import Code
from shared.errors import Conflict
from shared.ids import EntityId
from shared.observability import log_context, metrics
from shared.runs import cancellation as run_cancellation
from shared.runs import submission as run_submission
from shared.runs.completion import CompletionWaiter
from shared.runs.model import FINISHED, CodeRun


@dataclass
class SyncOutcome:
    run: CodeRun
    timed_out: bool
    abandoned: bool = False  # the caller went away; the run was cancelled


def run_and_wait(c: ApiContext, code: Code) -> SyncOutcome:
    body = raw_body()
    run_submission.check_body(body, c.settings.request_body_max_bytes)
    run_submission.ensure_capacity(
        c.queue_depth, code.language, c.settings.worker_pool_queue_size
    )
    begun = time.monotonic()
    run = run_submission.create_run(c.db, run_submission.RunRequest(
        code, params=first_query_values(), body=body.strip(), headers=header_lists()
    ))
    log_context.bind(run_id=run.id, code_id=code.id)
    client = ClientConnection.of_request()
    # Subscribe before enqueueing: the signal cannot fire before we listen.
    with CompletionWaiter(c.redis, str(run.id)) as waiter:
        run_submission.enqueue(c.db, c.celery, run, code.language)
        waiter.wait(timeout=float(code.timeout), should_stop=client.gone)
    if client.closed:
        return SyncOutcome(run=_abandon(c, run), timed_out=False, abandoned=True)
    # The signal only wakes us; the row is the truth (and covers a lost signal).
    stored = _read(c, run.id)
    metrics.record_run_elapsed(code.project_uuid, code.id, time.monotonic() - begun)
    return SyncOutcome(run=stored, timed_out=stored.status not in FINISHED)


def _abandon(c: ApiContext, run: CodeRun) -> CodeRun:
    """Nobody waits for this run any more: stop it (unless it has just ended)."""
    try:
        return run_cancellation.cancel(c.db, c.redis, c.celery, EntityId(uuid=run.id))
    except Conflict:
        return _read(c, run.id)


def wait_for_end(c: ApiContext, run: CodeRun, timeout: float) -> CodeRun:
    """The run as soon as it ends, or as it is after `timeout` seconds."""
    if timeout <= 0 or run.status in FINISHED:
        return run
    # Subscribe, then re-read: a run that ended in between is not missed.
    with CompletionWaiter(c.redis, str(run.id)) as waiter:
        run = _read(c, run.id)
        if run.status not in FINISHED:
            waiter.wait(timeout=timeout)
            run = _read(c, run.id)
    return run


def _read(c: ApiContext, run_id: uuid.UUID) -> CodeRun:
    with c.db.session() as session:
        return session.get(CodeRun, run_id)
