"""Create runs and hand them to their language's queue: commit first, enqueue after (an
after-commit step of the same unit of work)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.after_commit.steps import Step, StepKind
from shared.callbacks import delivery as callback_delivery
from shared.codes.model import Code
from shared.errors import NotFound, PayloadTooLarge, Saturated, Unavailable
from shared.ids import EntityId
from shared.messaging.queue_depth import QueueDepth, QueueMissing
from shared.observability import log_context, metrics
from shared.runs import store as run_store
from shared.runs.ending import after_end
from shared.runs.model import CodeRun
from shared.runs.statuses import ExitReason, RunStatus

if TYPE_CHECKING:
    from shared.platform import Platform
    from shared.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)


def check_body(body: str, limit: int) -> None:
    """A run's request body over the limit is refused before anything is stored."""
    if len(body.encode()) > limit:
        raise PayloadTooLarge(f"request body is too large (at most {limit} bytes)", "body")


def ensure_capacity(depth: QueueDepth, language: str, limit: int) -> None:
    """Refuse new runs while the language's queue holds more than `limit` (SPEC: 503 rather
    than queueing without bound). An unknown depth (broker down) lets the enqueue decide."""
    try:
        waiting = depth.ready_messages(language)
    except Exception as exc:  # the queue may not exist yet, or the broker blinked
        log.warning("queue depth of %s unknown: %s", language, exc)
        return
    if waiting > limit:
        metrics.record_rejected(language)
        raise Saturated(
            f"too many {language} runs are waiting ({waiting}); try again shortly",
            retry_after=max(1, min(30, waiting // max(1, limit or 1))),
        )


def any_over_capacity(depth: QueueDepth, languages: tuple[str, ...], limit: int) -> bool:
    """Whether any of these languages' queues holds more than `limit`: a sync call, which
    learns its code's language with its insert, checks its own queue first only then. A
    queue not there yet holds nothing; a broker that cannot tell ends the look (it would
    not tell of the others either, and each look waits for it): the enqueue decides."""
    for language in languages:
        try:
            if depth.ready_messages(language) > limit:
                return True
        except QueueMissing:
            continue
        except Exception as exc:
            log.warning("queue depths unknown: %s", exc)
            return False
    return False


@dataclass
class RunRequest:
    """Everything a new run of a code already read is made of (async submissions)."""

    code: Code
    params: dict[str, Any] = field(default_factory=dict)
    body: str = ""
    headers: dict[str, list[str]] = field(default_factory=dict)
    callback_url: str | None = None
    #: Known before the run exists, so a waiter can listen for its end before it is queued.
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass
class CallRequest:
    """A sync call's run, before its code is read: the code is read by the run's insert."""

    code_ref: EntityId
    #: The code must be of this type (the public endpoints run `endpoint` codes only).
    code_type: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    body: str = ""
    headers: dict[str, list[str]] = field(default_factory=dict)
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)


def submit_call(platform: Platform, call: CallRequest) -> tuple[Code, CodeRun]:
    """Create a sync call's run and enqueue it after the commit, the code read by the same
    statement as the insert (`NotFound` when there is no such code, nothing written). As
    `submit`: `Unavailable` when the broker refuses, the run then ended."""
    run = CodeRun(id=call.run_id, status=RunStatus.QUEUED, params=call.params, body=call.body,
                  headers=call.headers, extra={}, result="", callback=None)
    with platform.unit_of_work(one_statement=True) as uow:
        added = run_store.add_for_code(uow.connection, run, call.code_ref,
                                       StepKind.ENQUEUE_RUN.value, call.code_type)
        if added is None:
            raise NotFound("code not found")
        code, outbox_id = added
        log_context.bind(code_id=code.id)
        uow.after_commit(Step(StepKind.ENQUEUE_RUN, run.id, {"language": code.language}),
                         outbox_id)
        uow.commit()
    _requested(uow, [code])
    return code, run


def submit(platform: Platform, requests: list[RunRequest]) -> list[CodeRun]:
    """Create the runs in one transaction and enqueue them after its commit, all in one
    broker transaction: a batch is created and enqueued whole. If the broker refuses, every
    run of the call is ended (`enqueue_failed`, its waiters signalled, its callback sent) and
    the caller gets `Unavailable`: nothing of it will ever execute."""
    runs = [
        CodeRun(
            id=item.run_id,
            code_id=item.code.id,
            code_mongo_id=item.code.mongo_object_id,
            status=RunStatus.QUEUED,
            params=item.params,
            body=item.body,
            headers=item.headers,
            extra={},
            result="",
            callback=callback_delivery.new_callback(item.callback_url)
            if item.callback_url else None,
        )
        for item in requests
    ]
    with platform.unit_of_work(one_statement=len(runs) == 1) as uow:
        if len(runs) == 1:  # the row and its outbox entry in one statement
            step = Step(StepKind.ENQUEUE_RUN, runs[0].id, {"language": requests[0].code.language})
            outbox_id = run_store.add_with_outbox(uow.connection, runs[0], step)
            uow.after_commit(step, outbox_id)
        else:
            for run, item in zip(runs, requests, strict=True):
                run_store.add(uow.session, run)
                uow.after_commit(
                    Step(StepKind.ENQUEUE_RUN, run.id, {"language": item.code.language}))
        uow.commit()
    _requested(uow, [item.code for item in requests])
    return runs


def _requested(uow: UnitOfWork, codes: list[Code]) -> None:
    """After a submission's commit: count the runs asked for, and tell the caller when the
    broker refused them (`Unavailable`: they were ended, none will execute)."""
    for code in codes:
        metrics.record_run_requested(code.project_uuid, code.id)
    if uow.failed(StepKind.ENQUEUE_RUN):
        raise Unavailable("the run queue is unavailable, try again later")


def end_undispatched(uow: UnitOfWork, steps: list[Step], error: str) -> None:
    """Expiry of ENQUEUE_RUN: runs that never reached their queue end `failed` (if still
    queued), their waiters are woken and their callbacks sent."""
    message = f"could not enqueue the run: {error}"
    for step in steps:
        ended = run_store.finish(
            uow.connection, step.run_id, RunStatus.FAILED, from_status=RunStatus.QUEUED,
            result=message, exit_reason=ExitReason.ENQUEUE_FAILED,
            extra={"status_code": 503, "content_type": "json", "error": message},
        )
        if ended:
            after_end(uow, step.run_id, RunStatus.FAILED, ended.wants_callback)
