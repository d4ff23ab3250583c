"""What a worker measures about the runs it executes, served on its own port.

A worker is one process (Celery's thread pool), so the default registry is enough; each
worker exposes only what it observed and Prometheus adds the fleet up. Names of the seed's
execution pool (`workerpool_*`) keep their meaning: tasks completed/failed/timed out, time
waiting in the queue, time executing.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

from shared.runs.statuses import ExitReason, RunStatus

log = logging.getLogger(__name__)

QUEUE_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
START_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# Exit reasons that mean the sandbox was stopped by force (worker/sandbox/sandbox.py).
KILL_REASONS = frozenset({
    ExitReason.TIMEOUT, ExitReason.MEMORY_LIMIT, ExitReason.OUTPUT_LIMIT, ExitReason.LOG_LIMIT,
    ExitReason.CANCELLED, ExitReason.PROTOCOL, ExitReason.KILLED,
})


@dataclass(frozen=True)
class WorkerMetrics:
    runs: Counter
    completed: Counter
    failed: Counter
    timed_out: Counter
    queue_wait: Histogram
    duration: Histogram
    container_start: Histogram
    kills: Counter


@functools.cache
def worker_metrics() -> WorkerMetrics:
    disable_created_metrics()
    lang = ["language"]
    return WorkerMetrics(
        runs=Counter(
            "codeactions_runs", "Runs executed, by language, final status and reason",
            ["language", "status", "reason"],
        ),
        completed=Counter("workerpool_tasks_completed", "Runs that completed", lang),
        failed=Counter("workerpool_tasks_failed", "Runs that failed (any reason)", lang),
        timed_out=Counter("workerpool_tasks_timeout", "Runs killed at their timeout", lang),
        queue_wait=Histogram(
            "workerpool_queue_wait_seconds", "Time from enqueue to a worker claiming the run",
            lang, buckets=QUEUE_WAIT_BUCKETS,
        ),
        duration=Histogram(
            "workerpool_task_duration_seconds", "Time executing a run (sandbox included)",
            lang, buckets=DURATION_BUCKETS,
        ),
        container_start=Histogram(
            "codeactions_container_start_seconds",
            "Time to get a sandbox ready for a job (create, start, hand over the job)",
            lang, buckets=START_BUCKETS,
        ),
        kills=Counter(
            "codeactions_sandbox_kills", "Sandboxes stopped by force, by reason",
            ["language", "reason"],
        ),
    )


@dataclass(frozen=True)
class FastPathMetrics:
    """The warm pool (worker/warm/pool.py) and warm environments (worker/warm/environments.py)."""

    sandbox_starts: Counter
    pool_ready: Gauge
    pool_started: Counter
    pool_discarded: Counter
    warm_runs: Counter
    warm_misses: Counter
    warm_live: Gauge
    warm_retired: Counter
    resident_fresh: Counter


@functools.cache
def fast_path_metrics() -> FastPathMetrics:
    disable_created_metrics()
    return FastPathMetrics(
        sandbox_starts=Counter(
            "codeactions_sandbox_starts_total",
            "Containers a run used: warm (taken from the pool) or cold (started for the run)",
            ["kind"],
        ),
        pool_ready=Gauge("codeactions_warm_pool_ready", "Pool containers started and waiting"),
        pool_started=Counter("codeactions_warm_pool_started_total", "Pool containers started"),
        pool_discarded=Counter(
            "codeactions_warm_pool_discarded_total", "Pool containers dropped unused",
            ["reason"],
        ),
        warm_runs=Counter(
            "codeactions_warm_environment_runs_total", "Runs served by a warm environment",
            ["language"],
        ),
        warm_misses=Counter(
            "codeactions_warm_environment_misses_total",
            "Runs of a warm code that found no idle environment (they used the warm pool)",
            ["language"],
        ),
        warm_live=Gauge("codeactions_warm_environments", "Warm environments alive"),
        warm_retired=Counter(
            "codeactions_warm_environment_retired_total", "Warm environments retired",
            ["reason"],
        ),
        resident_fresh=Counter(
            "codeactions_resident_processes_replaced_total",
            "Resident processes replaced after a run (it failed, overran, crashed or grew)",
        ),
    )


def record_run(
    language: str, status: str, reason: str, queue_wait: float | None, duration: float,
    container_start: float | None = None,
) -> None:
    """One executed run. Never raises: metrics must not fail a run."""
    try:
        m = worker_metrics()
        m.runs.labels(language, status, reason).inc()
        (m.completed if status == RunStatus.COMPLETED else m.failed).labels(language).inc()
        if reason == ExitReason.TIMEOUT:
            m.timed_out.labels(language).inc()
        if reason in KILL_REASONS:
            m.kills.labels(language, reason).inc()
        if queue_wait is not None:
            m.queue_wait.labels(language).observe(max(0.0, queue_wait))
        m.duration.labels(language).observe(duration)
        if container_start:
            m.container_start.labels(language).observe(container_start)
    except Exception:  # pragma: no cover - a bug here must not cost a run
        log.exception("recording run metrics failed")


def serve(host: str, port: int, languages: list[str]) -> None:
    """The worker's /metrics (any path, really) on `host:port`, in a daemon thread."""
    from prometheus_client import start_http_server

    fast_path_metrics()  # listed from the first scrape on, like the run metrics
    m = worker_metrics()
    for language in languages:  # series exist at 0 before the first run: rate() works
        for counter in (m.completed, m.failed, m.timed_out):
            counter.labels(language)
    start_http_server(port, addr=host)
    log.info("worker metrics on http://%s:%d/metrics", host, port)
