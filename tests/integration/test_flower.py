"""Flower, started the way `make run` starts it, lists a worker per language queue."""

from __future__ import annotations

import time

import requests

from codeactions.local.children import spawn_child, stop_children
from tests.conftest import TEST_BASE_PORT

FLOWER_PORT = TEST_BASE_PORT + 30
AUTH = ("ops", "flower-test-password")


def test_flower_api_lists_a_worker_per_language(platform):
    env = {**platform.env, "FLOWS_CODE_ACTIONS_FLOWER_PORT": str(FLOWER_PORT),
           "FLOWS_CODE_ACTIONS_FLOWER_BASIC_AUTH": ":".join(AUTH)}
    flower = spawn_child(["flower"], env)
    url = f"http://127.0.0.1:{FLOWER_PORT}/api/workers"
    try:
        queues: dict[str, set[str]] = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert flower.poll() is None, "flower exited"
            try:
                response = requests.get(url, params={"refresh": "1"}, auth=AUTH, timeout=15)
            except requests.ConnectionError:
                time.sleep(0.5)
                continue
            assert response.status_code == 200, response.text
            queues = {
                name: {q["name"] for q in (info.get("active_queues") or [])}
                for name, info in response.json().items()
            }
            if all(any(f"runs.{lang}" in qs for qs in queues.values())
                   for lang in platform.worker_metrics_ports):
                break
            time.sleep(1)
        for language in platform.worker_metrics_ports:
            owners = [name for name, qs in queues.items() if f"runs.{language}" in qs]
            assert owners and all(f"-{language}@" in name for name in owners), queues
        # Without the password, neither the API nor the dashboard answers.
        assert requests.get(url, timeout=10).status_code == 401
        assert requests.get(f"http://127.0.0.1:{FLOWER_PORT}/", timeout=10).status_code == 401
    finally:
        stop_children([flower])
