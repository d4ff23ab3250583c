"""The per-code rate limit across API processes, and its fail-open path."""

from __future__ import annotations

import logging
import socket
import time

import requests
from prometheus_client import REGISTRY

from api.app import create_app
from api.rate_limit import CodeRateLimiter
from codeactions.local.platform import wait_for_http
from tests.conftest import TEST_BASE_PORT
from tests.integration.helpers import create_code

SOURCE = "def Run(engine):\n    engine.result.set('ok')\n"
LIMIT, WINDOW = 3, 10


def test_two_api_processes_share_one_count(platform):  # noqa: ANN001
    from codeactions.local.children import spawn_child, stop_children

    ports = (TEST_BASE_PORT + 30, TEST_BASE_PORT + 31)
    children = []
    try:
        for port in ports:
            env = {**platform.env, "FLOWS_CODE_ACTIONS_PORT": str(port),
                   "FLOWS_CODE_ACTIONS_CODE_LIMITER_MAX_REQUESTS": str(LIMIT),
                   "FLOWS_CODE_ACTIONS_CODE_LIMITER_WINDOW_WINDOW": str(WINDOW)}
            children.append(spawn_child(["api", "--workers", "1"], env))
        for port, child in zip(ports, children, strict=True):
            wait_for_http(f"http://127.0.0.1:{port}/healthz", 60, [child])
        code = create_code(platform, SOURCE)
        first, second = (f"http://127.0.0.1:{port}/action/endpoint/{code['id']}"
                         for port in ports)

        # Alternate between the processes: together they let exactly LIMIT through.
        passed = [requests.post(url, timeout=60) for url in (first, second, first)]
        assert [r.status_code for r in passed] == [200] * LIMIT
        refused = [requests.post(url, timeout=60) for url in (second, first)]
        assert [r.status_code for r in refused] == [429, 429]
        retry_after = int(refused[-1].headers["Retry-After"])
        assert 1 <= retry_after <= WINDOW
        assert "rate limit" in refused[-1].json()["message"]

        time.sleep(retry_after + 0.5)  # the oldest request leaves the window
        assert requests.post(second, timeout=60).status_code == 200
    finally:
        stop_children(children)


def test_an_unreachable_redis_fails_open_with_a_log_and_a_metric(platform, caplog):  # noqa: ANN001
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
    app = create_app(platform.settings(code_limiter_max_requests=1))
    # Only the limiter loses Redis; the run still completes through the real one.
    app.extensions["codeactions"].limiter = CodeRateLimiter(dead, 1, 60)
    client = app.test_client()
    code = create_code(platform, SOURCE)

    def fail_open_count() -> float:
        return REGISTRY.get_sample_value("ca_rate_limit_fail_open_total") or 0.0

    before = fail_open_count()
    with caplog.at_level(logging.ERROR, logger="api.rate_limit"):
        statuses = [client.post(f"/action/endpoint/{code['id']}").status_code
                    for _ in range(3)]
    assert statuses == [200, 200, 200]  # past the limit of 1: nothing is counted
    assert fail_open_count() - before == 3
    messages = [r.getMessage() for r in caplog.records if r.name == "api.rate_limit"]
    assert len(messages) == 1 and "rate limiter unavailable" in messages[0]
    app.extensions["codeactions"].db.dispose()
