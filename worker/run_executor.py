"""Execute one run: claim it, run the code in the sandbox, store the outcome, signal the end.

A redelivered task finds the run already claimed and does nothing, so the code never runs
twice. Database writes per run: the claim, then one unit of work with the logs and the final
status, whose after-commit steps signal the end, archive the logs to S3 as one object and
schedule the callback.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import redis
import sqlalchemy.exc

from shared.after_commit.steps import Step, StepKind
from shared.codes.model import LEGACY, Code
from shared.logs import store as log_store
from shared.observability import log_context
from shared.platform import Platform
from shared.runs import cancel_flag as cancellation
from shared.runs import store as run_store
from shared.runs.ending import after_end
from shared.runs.model import ANSWERED, CodeRun
from shared.runs.statuses import ExitReason, RunStatus
from worker.images import engine_image_tag
from worker.leases import RunLeases
from worker.metrics import record_run
from worker.preparers.preparer import CodePreparer, PreparationError
from worker.sandbox.sandbox import NotStarted, Sandbox, SandboxLimits, SandboxOutcome
from worker.warm.environments import WarmSpec

log = logging.getLogger(__name__)

#: PostgreSQL out of reach (not a bad statement): worth waiting for.
DATABASE_DOWN = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                 sqlalchemy.exc.TimeoutError)
DOCKER_WAIT_POLL = 0.5


class StorageUnavailable(Exception):
    """PostgreSQL could not be reached to claim a run: it stays queued, try again later."""


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
        platform: Platform,
        sandbox: Sandbox,
        worker_name: str | None = None,
        preparers: dict[str, CodePreparer] | None = None,
        leases: RunLeases | None = None,
    ) -> None:
        self.platform = platform
        self.settings = platform.settings
        self.db = platform.db
        self.redis = platform.redis
        self.sandbox = sandbox
        self.worker_name = worker_name or socket.gethostname()
        self.preparers = preparers or {}
        self.leases = leases or RunLeases()
        self._image_tags: dict[str, str] = {}

    def image_for(self, language: str) -> str:
        """Computed once per process: the tag hashes the engine's files."""
        if language not in self._image_tags:
            self._image_tags[language] = engine_image_tag(language)
        return self._image_tags[language]

    def execute(self, run_id: str) -> str | None:
        """Returns the final status, or None when the run was not ours to execute. Raises
        `StorageUnavailable` when PostgreSQL cannot be reached for the claim (the task is
        retried: the run is still queued)."""
        rid = uuid.UUID(run_id)
        with self.sandbox.activity.running():
            claimed = self._claim(rid)
            if claimed is None:  # claimed already, finished, or deleted with its code
                log.info("run %s already claimed or finished; skipping", run_id)
                return None
            self.leases.hold(rid)
            try:
                outcome = self._run(run_id, *claimed)
                return self._store_durably(rid, claimed[1].id, outcome,
                                           claimed[0].wants_callback)
            finally:
                self.leases.release(rid)

    def _claim(self, run_id: uuid.UUID) -> tuple[CodeRun, Code] | None:
        try:
            # One statement with no step to follow: a pooled connection in autocommit, no
            # session or unit of work (0.19 CPU-ms fewer per run, on its critical path).
            with self.db.begin(one_statement=True) as connection:
                return run_store.claim_with_code(
                    connection, run_id, self.worker_name, self.settings.run_lease_seconds
                )
        except DATABASE_DOWN as exc:
            raise StorageUnavailable(str(exc)) from exc

    def _run(self, run_id: str, run: CodeRun, code: Code) -> SandboxOutcome:
        job = engine_job(code.source, run.params, run.body, run.headers, code.compat)
        log_context.bind(code_id=code.id)
        queue_wait = _seconds_between(run.created_at, run.started_at)
        limits = SandboxLimits.for_code(self.settings, code.timeout, network=code.network)
        labels = {
            "codeactions.run_id": run_id,
            "codeactions.code_id": str(code.id),
            "codeactions.worker": self.worker_name,
        }
        warm = None
        if code.warm or self.settings.warm_environments:
            warm = WarmSpec(code.language, str(code.id), str(code.project_uuid),
                            resident=code.mode == "resident")
        begun = time.monotonic()
        deadline = begun + code.timeout
        try:
            preparer = self.preparers.get(code.language)
            if preparer is not None:
                job.update(preparer.job_fields(code.source, code.compat))
            while True:
                try:
                    outcome = self.sandbox.run(
                        self.image_for(code.language), job, limits, labels,
                        should_stop=lambda: self._cancelled(run_id), warm=warm,
                    )
                    break
                except NotStarted:
                    # The code did not start: if Docker is away, wait for it within the
                    # run's own timeout rather than failing every run of the outage.
                    if not self._wait_for_docker(deadline):
                        raise
        except PreparationError as exc:
            outcome = _failure(ExitReason.ERROR, f"Action execution failed: {exc}")
            outcome.logs.append({"type": "error", "content": outcome.error, "at": time.time()})
        except Exception as exc:  # docker down, image missing: the run fails, the worker lives
            log.exception("sandbox failure for run %s", run_id)
            outcome = _failure(
                ExitReason.SANDBOX_ERROR, f"the sandbox could not run the code: {exc}"
            )
        record_run(code.language, outcome.status, outcome.exit_reason, queue_wait,
                   time.monotonic() - begun, outcome.startup_seconds)
        # Only a legacy code's failure may still answer the result its code set (the engine
        # says so with a result frame before its failed end; frames are untrusted).
        outcome.answered = (
            outcome.answered and outcome.exit_reason == ExitReason.ERROR
            and code.compat == LEGACY
        )
        return outcome

    def _wait_for_docker(self, deadline: float) -> bool:
        """True once Docker answers again (retry the run), False if it answers already (the
        failure was not an outage) or not before `deadline`."""
        if self.sandbox.docker_answers():
            return False
        log.warning("Docker does not answer: the run waits for it")
        while time.monotonic() < deadline - 1:
            time.sleep(DOCKER_WAIT_POLL)
            if self.sandbox.docker_answers():
                return True
        return False

    def _store_durably(
        self, run_id: uuid.UUID, code_id: uuid.UUID, outcome: SandboxOutcome,
        calls_back: bool = True,
    ) -> str | None:
        """Store the outcome, retrying while PostgreSQL is unreachable (for at most
        `store_retry_seconds`): a run whose code finished keeps its outcome."""
        deadline = time.monotonic() + self.settings.store_retry_seconds
        delay = 0.5
        while True:
            try:
                return self._store(run_id, code_id, outcome, calls_back)
            except DATABASE_DOWN as exc:
                if time.monotonic() + delay > deadline:
                    log.error("the outcome of run %s is lost: PostgreSQL unreachable for %ds "
                              "(%s)", run_id, self.settings.store_retry_seconds, exc)
                    return None
                log.warning("storing run %s waits for PostgreSQL: %s", run_id, exc)
                time.sleep(delay)
                delay = min(5.0, delay * 2)
            except Exception:
                # Never leave a claimed run `started`: record the failure without the output.
                log.exception("storing the outcome of run %s failed", run_id)
                failure = _failure(ExitReason.STORE_ERROR, "the run's output could not be stored")
                return self._store(run_id, None, failure, calls_back)

    def _cancelled(self, run_id: str) -> bool:
        try:
            return cancellation.is_cancelled(self.redis, run_id)
        except redis.RedisError:  # cannot tell: keep running (the timeout still holds)
            return False

    def _store(self, run_id: uuid.UUID, code_id: uuid.UUID | None, outcome: SandboxOutcome,
               calls_back: bool) -> str:
        """`calls_back`: the run has a callback (its schedule is written to the outbox with
        the end)."""
        status = RunStatus.COMPLETED if outcome.status == RunStatus.COMPLETED else RunStatus.FAILED
        logs = self._log_rows(run_id, code_id, outcome)
        if status == RunStatus.FAILED and outcome.exit_reason != ExitReason.ERROR:
            # Limits and kills become an error log too, so the run's logs tell the story.
            logs.append(self._row(run_id, code_id, len(logs), "error", outcome.error))
        completed = status == RunStatus.COMPLETED
        result = outcome.result if completed else (outcome.error or outcome.result)
        extra: dict[str, Any] = {
            "status_code": outcome.status_code, "content_type": outcome.content_type,
        }
        if status == RunStatus.FAILED and outcome.answered:
            # A legacy code that failed after setting a result: the caller gets that result,
            # the run stays failed with its error.
            result = outcome.result
            extra.update({"error": outcome.error, ANSWERED: True})
        elif status == RunStatus.FAILED:
            extra = {"status_code": 500, "content_type": "json", "error": outcome.error}
        logs = logs if code_id is not None else []
        # Nothing but the run's end to write (no logs, no callback to schedule): that one
        # statement is the transaction.
        with self.platform.unit_of_work(one_statement=not logs and not calls_back) as uow:
            # The run first: a run the reaper already ended writes nothing, and the insert's
            # trigger (the code's log count row, shared by its concurrent runs) holds its lock
            # only from here to the commit.
            finished = run_store.finish(
                uow.connection,
                run_id,
                status,
                result=result,
                extra=extra,
                exit_reason=outcome.exit_reason,
                container_id=outcome.container_id or None,
            )
            if not finished:  # someone else (the stuck-run reaper) already ended it
                # …or this worker's previous attempt, committed though its answer was lost:
                # wake the waiters anyway (without a record they read the row).
                uow.after_commit(Step(StepKind.SIGNAL_DONE, run_id, {"status": str(status)}))
                uow.commit()
                return status
            # Waiters first (steps run in the order registered): the logs are in PostgreSQL
            # with the run, the S3 archive can follow.
            after_end(uow, run_id, status, finished.wants_callback, finished.record)
            if logs:
                log_store.add_batch(uow.session, logs)
                uow.after_commit(Step(StepKind.ARCHIVE_LOGS, run_id, payload=logs))
            uow.commit()
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


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


def _failure(reason: str, message: str) -> SandboxOutcome:
    return SandboxOutcome(status=RunStatus.FAILED, exit_reason=reason, error=message)
