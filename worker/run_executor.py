"""Execute one run: claim it, run the code in the sandbox, store the outcome, signal the end.

A redelivered task finds the run already claimed and does nothing, so the code never runs
twice. Database writes per run: the claim, then one transaction with the logs and the final
status. Logs go to S3 as one object. One completion signal.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis

from shared.codes.model import LEGACY
from shared.db import Database
from shared.logs import store as log_store
from shared.logs.archive import LogArchive
from shared.observability import log_context
from shared.runs import cancel_flag as cancellation
from shared.runs import completion
from shared.runs import store as run_store
from shared.runs.model import ANSWERED, COMPLETED, FAILED
from shared.settings import Settings
from worker.images import engine_image_tag
from worker.metrics import record_run
from worker.preparers.preparer import CodePreparer, PreparationError
from worker.sandbox.sandbox import Sandbox, SandboxLimits, SandboxOutcome
from worker.warm.environments import WarmSpec

log = logging.getLogger(__name__)


#: Longest log line the engines keep (engines/PROTOCOL.md, `limits`).
LOG_CONTENT_MAX = 8000


def engine_job(
    source: str,
    params: dict[str, Any] | None = None,
    body: str | None = "",
    headers: dict[str, Any] | None = None,
    compat: str = "strict",
) -> dict[str, Any]:
    """The job an engine gets for one run (engines/PROTOCOL.md); `compat` is the code's
    (legacy: the old engine's leniency)."""
    return {
        "source": source,
        "params": params or {},
        "body": body or "",
        "headers": headers or {},
        "limits": {"log_content_max": LOG_CONTENT_MAX},
        "compat": compat,
    }


class RunExecutor:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        redis_client: redis.Redis,
        archive: LogArchive,
        sandbox: Sandbox,
        worker_name: str | None = None,
        preparers: dict[str, CodePreparer] | None = None,
        on_callback: Callable[[uuid.UUID], None] | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.redis = redis_client
        self.archive = archive
        self.sandbox = sandbox
        self.worker_name = worker_name or socket.gethostname()
        self.preparers = preparers or {}
        # Called after a run that asked for a callback is stored (schedules the delivery).
        self.on_callback = on_callback
        self._image_tags: dict[str, str] = {}

    def image_for(self, language: str) -> str:
        """Computed once per process: the tag hashes the engine's files."""
        if language not in self._image_tags:
            self._image_tags[language] = engine_image_tag(language)
        return self._image_tags[language]

    def execute(self, run_id: str) -> str | None:
        """Returns the final status, or None when the run was not ours to execute."""
        with self.sandbox.activity.running():
            status, wants_callback = self._execute(run_id)
        if wants_callback and self.on_callback is not None:
            self.on_callback(uuid.UUID(run_id))
        return status

    def _execute(self, run_id: str) -> tuple[str | None, bool]:
        rid = uuid.UUID(run_id)
        with self.db.session() as session:
            claimed = run_store.claim_with_code(session, rid, self.worker_name)
            if claimed is None:  # claimed already, finished, or deleted with its code
                session.rollback()
                log.info("run %s already claimed or finished; skipping", run_id)
                return None, False
            session.commit()
            run, code = claimed
            wants_callback = bool(run.callback)
            job = engine_job(code.source, run.params, run.body, run.headers, code.compat)
            language, source, compat = code.language, code.source, code.compat
            log_context.bind(code_id=code.id)
            queue_wait = _seconds_between(run.created_at, run.started_at)
            image = self.image_for(code.language)
            limits = SandboxLimits.for_code(self.settings, code.timeout, network=code.network)
            labels = {
                "codeactions.run_id": run_id,
                "codeactions.code_id": str(code.id),
                "codeactions.worker": self.worker_name,
            }
            code_id = code.id
            warm = None
            if code.warm or self.settings.warm_environments:
                warm = WarmSpec(code.language, str(code.id), str(code.project_uuid))
        begun = time.monotonic()
        try:
            preparer = self.preparers.get(language)
            if preparer is not None:
                job.update(preparer.job_fields(source, compat))
            outcome = self.sandbox.run(
                image, job, limits, labels, should_stop=lambda: self._cancelled(run_id),
                warm=warm,
            )
        except PreparationError as exc:
            outcome = _failure("error", f"Action execution failed: {exc}")
            outcome.logs.append({"type": "error", "content": outcome.error, "at": time.time()})
        except Exception as exc:  # docker down, image missing: the run fails, the worker lives
            log.exception("sandbox failure for run %s", run_id)
            outcome = _failure("sandbox_error", f"the sandbox could not run the code: {exc}")
        record_run(language, outcome.status, outcome.exit_reason, queue_wait,
                   time.monotonic() - begun, outcome.startup_seconds)
        # Only a legacy code's failure may still answer the result its code set (the engine
        # says so with a result frame before its failed end; frames are untrusted).
        outcome.answered = (
            outcome.answered and outcome.exit_reason == "error" and compat == LEGACY
        )
        try:
            return self._store(rid, code_id, outcome), wants_callback
        except Exception:
            # Never leave a claimed run `started`: record the failure without the output.
            log.exception("storing the outcome of run %s failed", run_id)
            failure = _failure("store_error", "the run's output could not be stored")
            return self._store(rid, None, failure), wants_callback

    def _cancelled(self, run_id: str) -> bool:
        try:
            return cancellation.is_cancelled(self.redis, run_id)
        except redis.RedisError:  # cannot tell: keep running (the timeout still holds)
            return False


    def _store(self, run_id: uuid.UUID, code_id: uuid.UUID | None, outcome: SandboxOutcome) -> str:
        status = COMPLETED if outcome.status == "completed" else FAILED
        logs = self._log_rows(run_id, code_id, outcome)
        if status == FAILED and outcome.exit_reason != "error":
            # Limits and kills become an error log too, so the run's logs tell the story.
            logs.append(self._row(run_id, code_id, len(logs), "error", outcome.error))
        result = outcome.result if status == COMPLETED else (outcome.error or outcome.result)
        extra: dict[str, Any] = {
            "status_code": outcome.status_code, "content_type": outcome.content_type,
        }
        if status == FAILED and outcome.answered:
            # A legacy code that failed after setting a result: the caller gets that result,
            # the run stays failed with its error.
            result = outcome.result
            extra.update({"error": outcome.error, ANSWERED: True})
        elif status == FAILED:
            extra = {"status_code": 500, "content_type": "json", "error": outcome.error}
        with self.db.session() as session:
            # The run first: a run the reaper already ended writes nothing, and the insert's
            # trigger (the code's log count row, shared by its concurrent runs) holds its lock
            # only from here to the commit.
            finished = run_store.finish(
                session,
                run_id,
                status,
                result=result,
                extra=extra,
                exit_reason=outcome.exit_reason,
                container_id=outcome.container_id or None,
            )
            if not finished:  # someone else (the stuck-run reaper) already ended it
                session.rollback()
                return status
            if code_id is not None and logs:
                log_store.add_batch(session, logs)
            session.commit()
        # Waiters first: the logs are in PostgreSQL already, the archive can follow.
        try:
            completion.publish_done(self.redis, str(run_id), status)
        except redis.RedisError as exc:  # waiters fall back to re-reading the run
            log.warning("completion signal for run %s not sent: %s", run_id, exc)
        if code_id is not None and logs:
            self._archive(run_id, code_id, logs)
        return status

    def _log_rows(
        self, run_id: uuid.UUID, code_id: uuid.UUID | None, outcome: SandboxOutcome
    ) -> list[dict[str, Any]]:
        rows = []
        for seq, entry in enumerate(outcome.logs):
            at = datetime.fromtimestamp(entry["at"], UTC)
            rows.append(self._row(run_id, code_id, seq, entry["type"], entry["content"], at))
        if outcome.stdout:
            rows.append(
                self._row(run_id, code_id, len(rows), "debug", "[stdout] " + outcome.stdout[:7990])
            )
        return rows

    @staticmethod
    def _row(
        run_id: uuid.UUID,
        code_id: uuid.UUID | None,
        seq: int,
        kind: str,
        content: str,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        at = at or datetime.now(UTC)
        return {
            "id": uuid.uuid4(),
            "run_id": run_id,
            "code_id": code_id,
            "type": kind,
            "content": content[:8000],
            "seq": seq,
            "created_at": at,
            "updated_at": at,
        }

    def _archive(self, run_id: uuid.UUID, code_id: uuid.UUID, logs: list[dict[str, Any]]) -> None:
        try:
            self.archive.put_run_logs(
                str(run_id), str(code_id), logs[0]["created_at"],
                [{**row, "id": str(row["id"]), "run_id": str(run_id), "code_id": str(code_id)}
                 for row in logs],
            )
        except Exception as exc:  # the index in PostgreSQL already holds every log
            log.warning("log archive for run %s failed: %s", run_id, exc)


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


def _failure(reason: str, message: str) -> SandboxOutcome:
    return SandboxOutcome(status="failed", exit_reason=reason, error=message)
