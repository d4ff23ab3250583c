"""The steps a unit of work may register, and the one failure policy they share.

Every step is idempotent (redoing it is harmless): a run published twice is claimed once, a
second completion signal wakes nobody new, a callback scheduled twice is delivered once (its
`pending` status guards it), an archive written twice is the same object. So the policy is:

1. A step runs right after its unit of work commits.
2. Durable steps are also written to the outbox *in* that transaction; a step that succeeds
   is removed from it. What is left there (the step failed, or the process died before it
   knew) is retried by the sweeper with doubling delays until the step's deadline.
3. Past the deadline the step **expires**: its kind says what that ends (the run, the
   callback), and the reason is recorded on the run.
4. A step whose failure the caller is told about right away (`expire_on_first_failure`: a
   run that could not be enqueued, answered 503) expires at once instead of being retried,
   so a run the caller was told failed never executes later.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any


class StepKind(StrEnum):
    ENQUEUE_RUN = "enqueue_run"
    SIGNAL_DONE = "signal_done"
    SCHEDULE_CALLBACK = "schedule_callback"
    ARCHIVE_LOGS = "archive_logs"


@dataclass(frozen=True)
class Step:
    """One side effect for one run, with small JSON arguments (e.g. the run's language).

    `payload` saves the first attempt a read (a run's logs, already in memory); it is never
    stored, so a retry from the outbox reads what it needs from PostgreSQL."""

    kind: StepKind
    run_id: uuid.UUID
    args: dict[str, Any] = field(default_factory=dict, compare=False)
    payload: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class StepPolicy:
    #: Written to the outbox with the commit, so a crash cannot lose it.
    durable: bool
    #: How long the sweeper keeps retrying a durable step before it expires.
    retry_for: timedelta = timedelta(0)
    #: The caller learns of the failure at once (and is told the run failed): no retry.
    expire_on_first_failure: bool = False


POLICIES: dict[StepKind, StepPolicy] = {
    # A sync caller is answered 503 and the run ended; found in the outbox (its process died
    # before knowing), the run is published again while it is still queued.
    StepKind.ENQUEUE_RUN: StepPolicy(
        durable=True, retry_for=timedelta(minutes=5), expire_on_first_failure=True
    ),
    # Waiters re-read the run when their wait ends (and poll while Redis is away): a lost
    # signal costs latency, never an answer.
    StepKind.SIGNAL_DONE: StepPolicy(durable=False),
    StepKind.SCHEDULE_CALLBACK: StepPolicy(durable=True, retry_for=timedelta(hours=1)),
    # PostgreSQL holds every log already; the archive is the copy operators read in S3.
    StepKind.ARCHIVE_LOGS: StepPolicy(durable=True, retry_for=timedelta(hours=24)),
}

#: Sweeper retry delays: first, then doubling up to the cap.
RETRY_FIRST = timedelta(seconds=2)
RETRY_MAX = timedelta(minutes=5)
#: A durable step's outbox entry becomes the sweeper's after this long: enough for the
#: committing process to run it and remove the entry.
SWEEP_GRACE = timedelta(seconds=10)


def retry_delay(attempts: int) -> timedelta:
    """Wait after `attempts` failed attempts (1-based)."""
    return min(RETRY_MAX, RETRY_FIRST * 2 ** max(0, attempts - 1))
