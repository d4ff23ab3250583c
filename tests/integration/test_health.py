"""`/health` reports each dependency and the live workers; 503 while one is down.

PostgreSQL and RabbitMQ are stopped for real, so this test gives its own API process its
own PostgreSQL and RabbitMQ (the session's stay up for the other tests); Redis, S3 and the
workers' heartbeats are the session's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
import redis
import requests

from codeactions.local.platform import wait_for_http
from shared.observability import worker_registry
from tests.conftest import REPO_ROOT, TEST_BASE_PORT

HEALTH_STATE = REPO_ROOT / ".state" / "test-health"
PG_PORT, RABBIT_PORT, API_PORT = TEST_BASE_PORT + 4, TEST_BASE_PORT + 5, TEST_BASE_PORT + 11


@pytest.fixture(scope="module")
def own_services() -> Iterator[tuple]:
    from codeactions.local.services.postgres import PostgresServer
    from codeactions.local.services.rabbitmq import RabbitMQServer

    postgres = PostgresServer(HEALTH_STATE, PG_PORT)
    rabbitmq = RabbitMQServer(HEALTH_STATE, RABBIT_PORT)
    postgres.start()
    rabbitmq.start()
    try:
        yield postgres, rabbitmq
    finally:
        rabbitmq.stop()
        postgres.stop()


@pytest.fixture(scope="module")
def health_api(platform, own_services) -> Iterator[str]:  # noqa: ANN001
    from codeactions.local.children import spawn_child, stop_children

    postgres, rabbitmq = own_services
    env = {k: v for k, v in platform.env.items() if k != "FLOWS_CODE_ACTIONS_API_METRICS_DIR"}
    env.update({
        "FLOWS_CODE_ACTIONS_DB_URI": postgres.url,
        "FLOWS_CODE_ACTIONS_RABBITMQ_URL": rabbitmq.url,
        "FLOWS_CODE_ACTIONS_PORT": str(API_PORT),
        "FLOWS_CODE_ACTIONS_HEALTH_CHECK_CACHE_TIME": "0.5",
    })
    child = spawn_child(["api", "--workers", "1"], env)
    try:
        wait_for_http(f"http://127.0.0.1:{API_PORT}/healthz", 60, [child])
        yield f"http://127.0.0.1:{API_PORT}/health"
    finally:
        stop_children([child])


def wait_for_health(url: str, status: int, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    body: dict = {}
    while time.monotonic() < deadline:
        response = requests.get(url, timeout=15)
        body = response.json()
        if response.status_code == status:
            return body
        time.sleep(0.3)
    raise AssertionError(f"/health never answered {status}: {body}")


def test_health_reports_every_dependency_and_live_workers(platform, health_api):  # noqa: ANN001
    body = wait_for_health(health_api, 200)
    assert body["status"] == "healthy"
    for name in ("database", "redis", "broker", "s3", "workers"):
        assert body[name]["status"] == "up", body
        assert isinstance(body[name]["latency_ms"], float | int)
    assert body["workers"]["queues"] == {f"runs.{lang}": 1 for lang in ("python", "javascript",
                                                                          "go")}


def test_health_is_503_while_rabbitmq_is_down(health_api, own_services):  # noqa: ANN001
    _, rabbitmq = own_services
    wait_for_health(health_api, 200)
    rabbitmq.stop()
    try:
        body = wait_for_health(health_api, 503)
        assert body["status"] == "unhealthy"
        assert body["broker"]["status"] == "down" and body["broker"]["error"]
        assert body["database"]["status"] == "up"
        # Metrics stay up without the broker; only the queue depth is missing.
        started = time.monotonic()
        metrics = requests.get(health_api.replace("/health", "/metrics"), timeout=60)
        assert metrics.status_code == 200 and "workerpool_queue_capacity" in metrics.text
        assert "workerpool_queue_size{" not in metrics.text
        assert time.monotonic() - started < 15  # generous: it must not hang on the broker
    finally:
        rabbitmq.start()
    assert wait_for_health(health_api, 200)["broker"]["status"] == "up"


def test_health_is_503_while_postgresql_is_down(health_api, own_services):  # noqa: ANN001
    postgres, _ = own_services
    wait_for_health(health_api, 200)
    postgres.stop()
    try:
        body = wait_for_health(health_api, 503)
        assert body["database"]["status"] == "down" and body["database"]["error"]
        assert body["broker"]["status"] == "up"
    finally:
        postgres.start()
    assert wait_for_health(health_api, 200)["database"]["status"] == "up"


def test_a_worker_counts_as_live_only_while_it_beats(platform):  # noqa: ANN001
    client = redis.Redis.from_url(platform.env["FLOWS_CODE_ACTIONS_REDIS"])
    name = f"test-worker-{os.getpid()}"
    worker_registry.beat(client, name, ["go"], pool_size=3, busy=1, ttl=1.0)
    live = {w.name: w for w in worker_registry.live(client, "go", ttl=1.0)}
    assert live[name].pool_size == 3 and live[name].busy == 1
    time.sleep(1.2)
    assert name not in {w.name for w in worker_registry.live(client, "go", ttl=1.0)}
    worker_registry.forget(client, name, ["go"])
