"""Task names and queues: the only thing the API and the workers agree on about Celery."""

from __future__ import annotations

RUN_CODE = "codeactions.run_code"
DELIVER_CALLBACK = "codeactions.deliver_callback"

# Callback deliveries wait on other people's servers: their own queue, so a slow receiver
# never holds a language's run slots. Every worker consumes it.
CALLBACK_QUEUE = "callbacks"


def run_queue(language: str) -> str:
    """One queue per language so each language scales on its own (`runs.python`, ...)."""
    return f"runs.{language}"


# Housekeeping, scheduled by beat and consumed by beat's own worker (`codeactions beat`).
CLEAN_RETENTION = "codeactions.clean_retention"
REAP_STUCK_RUNS = "codeactions.reap_stuck_runs"
HOUSEKEEPING_QUEUE = "housekeeping"
