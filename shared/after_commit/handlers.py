"""How each after-commit step is done on this platform, and what its expiry ends: the
wiring of shared/after_commit/steps.py to the broker, Redis and S3 (built by each
process's bootstrap)."""

from __future__ import annotations

import redis
from celery import Celery

from shared.after_commit.runner import Expiry, Handler
from shared.after_commit.steps import Step, StepKind
from shared.callbacks import delivery as callback_delivery
from shared.db import Database
from shared.logs.archive import LogArchive, archive_run_logs
from shared.messaging import dispatch
from shared.observability import metrics
from shared.runs import completion, signal_record, submission


def step_handlers(
    celery: Celery, redis_client: redis.Redis, db: Database, archive: LogArchive
) -> dict[StepKind, Handler]:
    def enqueue(steps: list[Step]) -> None:
        dispatch.publish_runs(celery, [(step.run_id, step.args["language"]) for step in steps])
        for step in steps:
            metrics.record_submitted(step.args["language"])

    def signal(steps: list[Step]) -> None:
        completion.publish_many(redis_client, [
            (str(step.run_id), signal_record.encode(step.args["status"], step.payload))
            for step in steps
        ])

    def schedule_callback(steps: list[Step]) -> None:
        for step in steps:
            dispatch.publish_callback(celery, step.run_id, step.args.get("countdown", 0))

    def archive_logs(steps: list[Step]) -> None:
        for step in steps:
            archive_run_logs(archive, db, step.run_id, step.payload)

    return {
        StepKind.ENQUEUE_RUN: enqueue,
        StepKind.SIGNAL_DONE: signal,
        StepKind.SCHEDULE_CALLBACK: schedule_callback,
        StepKind.ARCHIVE_LOGS: archive_logs,
    }


def step_expiries() -> dict[StepKind, Expiry]:
    """ARCHIVE_LOGS has none: PostgreSQL keeps every log; only the S3 copy is missing (the
    error is logged and counted). SIGNAL_DONE is never retried."""
    return {
        StepKind.ENQUEUE_RUN: submission.end_undispatched,
        StepKind.SCHEDULE_CALLBACK: callback_delivery.give_up_unscheduled,
    }
