"""Run a code and wait for it: create the run, subscribe, enqueue, wait for the signal."""

from __future__ import annotations

from dataclasses import dataclass

from api.context import ApiContext
from api.request_input import first_query_values, header_lists, raw_body
from shared.completion import CompletionWaiter
from shared.errors import PayloadTooLarge
from shared.models import Code, CodeRun
from shared.models.coderun import FINISHED
from shared.services import run_submission


@dataclass
class SyncOutcome:
    run: CodeRun
    timed_out: bool


def run_and_wait(c: ApiContext, code: Code) -> SyncOutcome:
    body = raw_body()
    limit = c.settings.request_body_max_bytes
    if len(body.encode()) > limit:
        raise PayloadTooLarge(f"request body is too large (at most {limit} bytes)", "body")
    run_submission.ensure_capacity(
        c.queue_depth, code.language, c.settings.worker_pool_queue_size
    )
    run = run_submission.create_run(
        c.db, code, params=first_query_values(), body=body.strip(), headers=header_lists()
    )
    # Subscribe before enqueueing: the signal cannot fire before we listen.
    with CompletionWaiter(c.redis, str(run.id)) as waiter:
        run_submission.enqueue(c.db, c.celery, run, code.language)
        waiter.wait(timeout=float(code.timeout))
    with c.db.session() as session:
        stored = session.get(CodeRun, run.id)
    # The signal only wakes us; the row is the truth (and covers a lost signal).
    return SyncOutcome(run=stored, timed_out=stored.status not in FINISHED)
