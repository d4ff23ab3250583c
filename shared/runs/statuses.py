"""A run's state machine and the reasons it ends: one spelling for the worker, the stores, the
metrics and the API. Both are `str` enums, so they compare equal to the stored text."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """queued → started → completed | failed; queued → failed (cancelled, never dispatched)."""

    QUEUED = "queued"
    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"


FINISHED = frozenset({RunStatus.COMPLETED, RunStatus.FAILED})


class ExitReason(StrEnum):
    """Why a run ended, as `exit_reason` on the run and the `reason` label of metrics."""

    COMPLETED = "completed"
    ERROR = "error"  # the code raised, or the engine refused its result
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    LOG_LIMIT = "log_limit"
    PROTOCOL = "protocol"  # the engine's output broke the wire format
    KILLED = "killed"  # SIGKILLed from outside (exit code 137) without an OOM
    CRASHED = "crashed"  # the engine stopped without a result
    NO_END_FRAME = "no_end_frame"
    CANCELLED = "cancelled"
    SANDBOX_ERROR = "sandbox_error"  # the container could not be started or driven
    STORE_ERROR = "store_error"  # the outcome could not be stored
    ENQUEUE_FAILED = "enqueue_failed"  # the run never reached its queue
    WORKER_LOST = "worker_lost"  # its worker died while the run was started
    CODE_DELETED = "code_deleted"  # its code was deleted before it ended


#: Runs that failed because the platform did, not the code: a caller may simply try again.
PLATFORM_FAILURES = frozenset({
    ExitReason.WORKER_LOST, ExitReason.SANDBOX_ERROR, ExitReason.STORE_ERROR,
    ExitReason.ENQUEUE_FAILED,
})
