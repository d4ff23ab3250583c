"""`GET /metrics`: request metrics (prometheus-flask-exporter), the seed's names, the pool.

Under gunicorn every worker process writes its values to prometheus_client's multiprocess
directory (`PROMETHEUS_MULTIPROC_DIR`, set by `codeactions api` before anything imports
prometheus_client) and a scrape, whichever process answers it, adds them all up. Anything
defined with prometheus_client in any module of the API (ours or another team's) shows up.
The pool's gauges (queue depth and capacity, live workers' slots) are read at scrape time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

from flask import Flask
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_flask_exporter import PrometheusMetrics, choose_encoder
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

from api.context import ApiContext
from shared.settings import LANGUAGES

log = logging.getLogger(__name__)


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class PoolCollector(Collector):
    """The seed's `workerpool_*` gauges mapped onto our queues and workers, per language."""

    def __init__(self, c: ApiContext) -> None:
        self.c = c

    def collect(self) -> Iterator[Metric]:
        from shared.observability import worker_registry

        settings = self.c.settings
        size = GaugeMetricFamily(
            "workerpool_queue_size", "Runs waiting in the language's queue", labels=["language"]
        )
        capacity = GaugeMetricFamily(
            "workerpool_queue_capacity", "Runs a language's queue takes before 503",
            labels=["language"],
        )
        total = GaugeMetricFamily(
            "workerpool_workers_total", "Run slots of the live workers", labels=["language"]
        )
        busy = GaugeMetricFamily(
            "workerpool_workers_busy", "Run slots executing a run now", labels=["language"]
        )
        live = GaugeMetricFamily(
            "codeactions_workers_live", "Live worker processes", labels=["language"]
        )
        broker_up = True
        for language in LANGUAGES:
            capacity.add_metric([language], settings.worker_pool_queue_size)
            try:
                if broker_up:
                    size.add_metric([language], self.c.queue_depth.ready_messages(language))
            except Exception as exc:  # broker down: /health says so; metrics stay up
                log.debug("queue depth of %s unknown: %s", language, exc)
                broker_up = False  # don't wait for it once per language
            try:
                workers = worker_registry.live(
                    self.c.redis, language, settings.worker_heartbeat_ttl
                )
            except Exception as exc:
                log.debug("live workers of %s unknown: %s", language, exc)
                continue
            total.add_metric([language], sum(w.pool_size for w in workers))
            busy.add_metric([language], sum(w.busy for w in workers))
            live.add_metric([language], len(workers))
        yield from (size, capacity, total, busy, live)


class _Proxy(Collector):
    """Serves another registry's metrics from the per-scrape registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()


class _ScrapeAll:
    """Every scrape builds one registry: all processes' values plus the pool's gauges."""

    extra: list[Collector]

    def generate_metrics(self, accept_header=None, names=None):  # noqa: ANN001, ANN201
        from prometheus_client import multiprocess

        registry = CollectorRegistry(auto_describe=False)
        if multiprocess_mode():
            multiprocess.MultiProcessCollector(registry)
        else:
            registry.register(_Proxy(self.registry))
            registry.register(_Proxy(REGISTRY))
        for collector in self.extra:
            registry.register(collector)
        if names:
            registry = registry.restricted_registry(names)
        encode, content_type = choose_encoder(accept_header)
        return encode(registry).decode("utf-8"), content_type


class _SingleProcessMetrics(_ScrapeAll, PrometheusMetrics):
    pass


class _GunicornMetrics(_ScrapeAll, GunicornInternalPrometheusMetrics):
    pass


def init_metrics(app: Flask, c: ApiContext) -> PrometheusMetrics:
    from shared.observability.metrics import request_metrics

    request_metrics()  # the seed's families are listed from the first scrape on
    cls = _GunicornMetrics if multiprocess_mode() else _SingleProcessMetrics
    # Grouped by URL rule, not path: one series per route, not one per code id.
    metrics = cls(app, path="/metrics", group_by="url_rule", registry=CollectorRegistry())
    metrics.extra = [PoolCollector(c)]
    return metrics
