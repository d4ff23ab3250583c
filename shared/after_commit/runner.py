"""Runs after-commit steps and applies the one failure policy (shared/after_commit/steps.py).

Each process has one runner, built by its bootstrap with the handlers of each step kind (how
to publish, signal, schedule, archive) and their expiries (what a step that can no longer be
done ends). Services never call it directly: they register steps on their unit of work.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from shared.after_commit import outbox
from shared.after_commit.steps import POLICIES, Step, StepKind, retry_delay

if TYPE_CHECKING:
    from shared.db import Database
    from shared.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

#: Does the steps (all of one kind, in order); raises when they could not be done.
Handler = Callable[[list[Step]], None]
#: Ends what depended on steps that can no longer be done, in the given unit of work, with
#: the reason (text for the run).
Expiry = Callable[["UnitOfWork", list[Step], str], None]


@dataclass(frozen=True)
class StepFailure:
    kind: StepKind
    steps: list[Step]
    error: str


@dataclass
class SweepReport:
    done: int = 0
    retried: int = 0
    expired: int = 0


class AfterCommitRunner:
    def __init__(
        self, db: Database, handlers: dict[StepKind, Handler], expiries: dict[StepKind, Expiry]
    ) -> None:
        missing = set(StepKind) - set(handlers)
        if missing:
            raise ValueError(f"no handler for step kinds {sorted(missing)}")
        self._db = db
        self._handlers = handlers
        self._expiries = expiries
        self._settler = _Settler(db)

    # --- right after a commit -------------------------------------------------------

    def run(self, steps: list[tuple[Step, int | None]]) -> list[StepFailure]:
        """Do the steps of one committed unit of work, grouped by kind in order of first
        appearance; `int` is the step's outbox id (durable steps). Returns the failures,
        already handled by the policy."""
        failures: list[StepFailure] = []
        done_ids: list[int] = []
        retry_ids: list[int] = []
        for kind, group in _grouped(steps):
            batch = [step for step, _ in group]
            ids = [entry for _, entry in group if entry is not None]
            try:
                self._handlers[kind](batch)
            except Exception as exc:  # any failure of a dependency: the policy decides
                error = _describe(exc)
                failures.append(StepFailure(kind, batch, error))
                _count_failure(kind)
                policy = POLICIES[kind]
                if policy.expire_on_first_failure:
                    log.warning("%s failed, ended at once: %s", kind, error)
                    if self._expire(kind, batch, error):
                        done_ids += ids
                elif policy.durable:
                    log.warning("%s failed, the sweeper retries it: %s", kind, error)
                    retry_ids += ids
                else:
                    log.warning("%s failed (not retried): %s", kind, error)
            else:
                done_ids += ids
        self._settle(done_ids, retry_ids, failures)
        return failures

    def _settle(self, done: list[int], retry: list[int], failures: list[StepFailure]) -> None:
        if not done and not retry:
            return
        if not retry and not self._db.shares_one_connection and self._settler.remove(done):
            return
        try:
            with self._db.begin() as connection:
                outbox.remove(connection, done)
                if retry:
                    errors = "; ".join(f.error for f in failures)
                    outbox.reschedule(connection, retry, errors, retry_delay(1).total_seconds())
        except Exception as exc:  # the sweeper redoes them: every step is idempotent
            log.warning("outbox not updated after its steps ran (%s): the sweeper redoes them",
                        _describe(exc))

    # --- the sweeper ------------------------------------------------------------------

    def sweep(self, limit: int = 100) -> SweepReport:
        """Retry or expire the outbox entries that are due, each locked while it is handled
        (so sweepers in several processes share the work)."""
        report = SweepReport()
        with self._db.begin() as connection:
            entries = outbox.claim_due(connection, limit)
            now = datetime.now(UTC)
            for entry in entries:
                step = entry.step()
                policy = POLICIES[step.kind]
                try:
                    self._handlers[step.kind]([step])
                except Exception as exc:
                    error = _describe(exc)
                    _count_failure(step.kind)
                    if now - entry.created_at >= policy.retry_for:
                        log.error("%s for run %s expired after %d attempts: %s",
                                  step.kind, step.run_id, entry.attempts + 1, error)
                        if self._expire(step.kind, [step], error):
                            outbox.remove(connection, [entry.id])
                            report.expired += 1
                        else:
                            outbox.reschedule(connection, [entry.id], error, 1.0)
                            report.retried += 1
                    else:
                        delay = retry_delay(entry.attempts + 1).total_seconds()
                        outbox.reschedule(connection, [entry.id], error, delay)
                        report.retried += 1
                else:
                    outbox.remove(connection, [entry.id])
                    report.done += 1
        return report

    def _expire(self, kind: StepKind, steps: list[Step], error: str) -> bool:
        """End what the steps were for; False when that could not be stored (the outbox
        entry, if any, then stays for the sweeper)."""
        expiry = self._expiries.get(kind)
        if expiry is None:
            return True
        from shared.unit_of_work import UnitOfWork

        try:
            with UnitOfWork(self._db, self) as uow:
                expiry(uow, steps, error)
                uow.commit()
        except Exception as exc:
            log.error("expiring %s failed: %s", kind, _describe(exc))
            return False
        return True


#: How long the settler gathers done entries before it removes them in one statement.
SETTLE_GATHER_SECONDS = 0.05


class _Settler:
    """Removes done outbox entries in batches, off the caller's path (a sync call answers
    without waiting for it; one DELETE covers the entries of every call of the last 50 ms).
    Entries not removed yet when the process dies are redone by the sweeper after their
    grace, which is harmless: every step is idempotent."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._ids: list[int] = []
        self._ready = threading.Condition()
        self._pid: int | None = None  # the thread belongs to the process that started it

    def remove(self, ids: list[int]) -> bool:
        """Hand over done entries; False when no thread can take them (the caller removes
        them itself)."""
        with self._ready:
            if self._pid != os.getpid():  # first use in this process (or in a forked child)
                self._ids = []  # what a parent had gathered is the parent's to remove
                try:
                    threading.Thread(target=self._loop, name="outbox-settler",
                                     daemon=True).start()
                except RuntimeError:  # no thread to be had (interpreter shutting down)
                    return False
                self._pid = os.getpid()
                atexit.register(self.flush)
            self._ids += ids
            self._ready.notify()
            return True

    def _loop(self) -> None:
        while True:
            with self._ready:
                while not self._ids:
                    self._ready.wait()
            time.sleep(SETTLE_GATHER_SECONDS)
            self.flush()  # never raises: the thread lives as long as its process

    def flush(self) -> None:
        with self._ready:
            ids, self._ids = self._ids, []
        if not ids:
            return
        try:
            with self._db.begin(one_statement=True) as connection:
                outbox.remove(connection, ids)
        except Exception as exc:  # the sweeper redoes them: every step is idempotent
            log.warning("%d outbox entries not removed after their steps ran (%s): the "
                        "sweeper redoes them", len(ids), _describe(exc))


def _grouped(steps: list[tuple[Step, int | None]]) -> list[tuple[StepKind, list]]:
    groups: dict[StepKind, list] = {}
    for step, entry in steps:
        groups.setdefault(step.kind, []).append((step, entry))
    return list(groups.items())


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]


def _count_failure(kind: StepKind) -> None:
    from shared.observability.metrics import after_commit_failures

    after_commit_failures().labels(kind.value).inc()
