"""Flower, started the way `make run` starts it, lists a worker per language queue, and does
not turn the workers' task events on unless they are configured (`TASK_EVENTS`)."""

from __future__ import annotations

import time

import kombu
import requests

from codeactions.local.children import spawn_child, stop_children
from tests.conftest import TEST_BASE_PORT
from tests.integration.helpers import create_code

FLOWER_PORT = TEST_BASE_PORT + 30
AUTH = ("ops", "flower-test-password")


def test_flower_api_lists_a_worker_per_language(platform):
    env = {**platform.env, "FLOWS_CODE_ACTIONS_FLOWER_PORT": str(FLOWER_PORT),
           "FLOWS_CODE_ACTIONS_FLOWER_BASIC_AUTH": ":".join(AUTH)}
    flower = spawn_child(["flower"], env)
    started = time.monotonic()
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
        # Flower asks the workers to send task events every 5 s unless told not to: past
        # that, a run still sends none (each would be a confirmed publish on its path).
        time.sleep(max(0.0, started + 7 - time.monotonic()))
        assert _task_events_of_one_run(platform) == []
    finally:
        stop_children([flower])


def _task_events_of_one_run(platform) -> list[str]:  # noqa: ANN001
    """The task events (`task-received`, `task-succeeded`, …) the workers sent around one
    sync call, as Celery's event receivers would see them."""
    code = create_code(platform, "def Run(engine):\n    engine.result.set('ok')\n")
    seen: list[str] = []
    with kombu.Connection(platform.urls["rabbitmq"]) as conn:
        events = kombu.Exchange("celeryev", type="topic")
        queue = kombu.Queue(exchange=events, routing_key="task.#", exclusive=True,
                            auto_delete=True)
        with conn.Consumer(queue, callbacks=[lambda body, msg: seen.append(
                msg.delivery_info["routing_key"])], accept=["json"]):
            response = requests.post(platform.url(f"/action/endpoint/{code['id']}"),
                                     timeout=60)
            assert response.status_code == 200, response.text
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=0.2)
                except TimeoutError:
                    pass
    return seen
