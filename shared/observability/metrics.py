"""The metrics the old dashboards read (SPEC.md), recorded where each event happens.

Request side (the API process; `/metrics`): `ca_run_count`, `ca_run_elapsed`,
`ca_code_created_count`, `ca_code_updated_count`, `workerpool_tasks_submitted_total`,
`workerpool_tasks_rejected_total`, `ca_rate_limit_fail_open_total`; the pool's gauges come
from `api.metrics.PoolCollector`.
Execution side (each worker, on its own port): see `worker.metrics`.

Metrics are created on first use (never at import), once per process. Under gunicorn the
values live in prometheus_client's multiprocess files, so every worker's counts add up.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

from shared.settings import LANGUAGES

# Seconds; a sync call waits at most the longest code timeout (300 s).
ELAPSED_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@dataclass(frozen=True)
class RequestMetrics:
    run_count: Gauge
    run_elapsed: Histogram
    code_created: Gauge
    code_updated: Gauge
    tasks_submitted: Counter
    tasks_rejected: Counter
    rate_limit_fail_open: Counter


@functools.cache
def request_metrics() -> RequestMetrics:
    disable_created_metrics()  # `*_created` series double the output and nobody reads them
    metrics = _define()
    for language in LANGUAGES:  # series exist at 0 before the first event: rate() works
        metrics.tasks_submitted.labels(language)
        metrics.tasks_rejected.labels(language)
    return metrics


def _define() -> RequestMetrics:
    code_labels = ["project_uuid", "code_id"]
    return RequestMetrics(
        # Names keep the seed's spelling (no `_total` suffix in the exposition).
        run_count=_seed_counter(
            "ca_run_count", "The number of code executions started by a request", code_labels
        ),
        run_elapsed=Histogram(
            "ca_run_elapsed", "The time a run execution request took to complete (seconds)",
            code_labels, buckets=ELAPSED_BUCKETS,
        ),
        code_created=_seed_counter(
            "ca_code_created_count", "The number of code creations", code_labels
        ),
        code_updated=_seed_counter(
            "ca_code_updated_count", "The number of code updates", code_labels
        ),
        tasks_submitted=Counter(
            "workerpool_tasks_submitted", "Runs handed to a language queue", ["language"]
        ),
        tasks_rejected=Counter(
            "workerpool_tasks_rejected", "Runs refused because the language queue was full",
            ["language"],
        ),
        rate_limit_fail_open=Counter(
            "ca_rate_limit_fail_open",
            "Requests to public endpoints let through without a rate-limit check because "
            "Redis was unreachable",
        ),
    )


def _seed_counter(name: str, documentation: str, labels: list[str]) -> Gauge:
    """The seed exposed these counters without a `_total` suffix and dashboards query them
    by that name; prometheus_client always appends `_total` to a Counter. So they are
    gauges that only ever go up, summed over processes (and kept when a process exits)."""
    return Gauge(name, documentation, labels, multiprocess_mode="sum")


def record_code_created(project_uuid: object, code_id: object) -> None:
    request_metrics().code_created.labels(str(project_uuid), str(code_id)).inc()


def record_code_updated(project_uuid: object, code_id: object) -> None:
    request_metrics().code_updated.labels(str(project_uuid), str(code_id)).inc()


def record_run_requested(project_uuid: object, code_id: object) -> None:
    request_metrics().run_count.labels(str(project_uuid), str(code_id)).inc()


def record_submitted(language: str) -> None:
    request_metrics().tasks_submitted.labels(language).inc()


def record_rejected(language: str) -> None:
    request_metrics().tasks_rejected.labels(language).inc()


def record_rate_limit_fail_open() -> None:
    request_metrics().rate_limit_fail_open.inc()


def record_run_elapsed(project_uuid: object, code_id: object, seconds: float) -> None:
    request_metrics().run_elapsed.labels(str(project_uuid), str(code_id)).observe(seconds)
