"""Faults with real processes: a dependency killed or stopped for real, the platform's own
processes (an API, a worker) pointed at it, and what a user would notice — the answer, the
stored run, its callback. The session's services stay up for the other tests: each test
gives its own API/worker their own PostgreSQL, Redis or RabbitMQ to break.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import create_engine, select

from codeactions.local.children import spawn_child, stop_children
from codeactions.local.platform import wait_for_http, wait_for_workers
from shared.messaging.celery_app import make_celery
from shared.runs.model import CodeRun
from tests.conftest import REPO_ROOT, TEST_BASE_PORT
from tests.integration.event_broker import eventually
from tests.integration.helpers import create_code

FAULTS_STATE = REPO_ROOT / ".state" / "test-faults"
PG_PORT, REDIS_PORT, API_PORT = TEST_BASE_PORT + 40, TEST_BASE_PORT + 41, TEST_BASE_PORT + 42

SLEEPER = ("import time\n\ndef Run(engine):\n    time.sleep({seconds})\n"
           "    engine.result.set('{word}')\n")
HELLO = "def Run(engine):\n    engine.result.set('hello ' + (engine.params.get('n') or ''))\n"


def _env(platform, **overrides: str) -> dict[str, str]:  # noqa: ANN001
    """The session's environment for a process of the test's own (its own metrics, ids)."""
    env = {k: v for k, v in platform.env.items() if k != "FLOWS_CODE_ACTIONS_API_METRICS_DIR"}
    env.update({"FLOWS_CODE_ACTIONS_" + key: value for key, value in overrides.items()})
    return env


class OwnProcesses:
    """An API and/or a worker of the test's own, stopped (and their sandboxes removed) at
    the end."""

    def __init__(self, platform, env: dict[str, str]) -> None:  # noqa: ANN001
        self.platform = platform
        self.env = env
        self.children = []
        self.worker_id = env.get("FLOWS_CODE_ACTIONS_WORKER_ID", "")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{API_PORT}"

    def api(self) -> OwnProcesses:
        child = spawn_child(["api", "--workers", "1"], {**self.env,
                                                         "FLOWS_CODE_ACTIONS_PORT": str(API_PORT)})
        self.children.append(child)
        wait_for_http(self.url + "/healthz", 60, [child])
        return self

    def worker(self, language: str = "python") -> OwnProcesses:
        child = spawn_child(["worker", "--language", language, "--concurrency", "2",
                             "--metrics-port", "0"], self.env)
        self.children.append(child)
        from shared.settings import Settings

        settings = Settings(**{k: v for k, v in self.env.items()
                               if k.startswith("FLOWS_CODE_ACTIONS_")})
        wait_for_workers(settings, [language], 180, [child])
        return self

    def stop(self) -> None:
        stop_children(self.children)
        import docker

        client = docker.from_env()
        for container in client.containers.list(
                all=True, filters={"label": "codeactions.sandbox"}, ignore_removed=True):
            if container.labels.get("codeactions.worker", "").startswith(self.worker_id or "-"):
                try:
                    container.remove(force=True)
                except docker.errors.APIError as exc:  # already going (its worker's sweep)
                    if exc.status_code not in (404, 409):
                        raise


@pytest.fixture()
def own(platform) -> Iterator[callable]:  # noqa: ANN001
    made: list[OwnProcesses] = []

    def make(**overrides: str) -> OwnProcesses:
        overrides.setdefault("WORKER_ID", f"faults-{uuid.uuid4().hex[:6]}")
        processes = OwnProcesses(platform, _env(platform, **overrides))
        made.append(processes)
        return processes

    yield make
    for processes in made:
        processes.stop()


@pytest.fixture(scope="module")
def own_redis() -> Iterator:
    from codeactions.local.services.redis import RedisServer

    server = RedisServer(FAULTS_STATE, REDIS_PORT)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def own_postgres(platform) -> Iterator:  # noqa: ANN001
    import subprocess
    import sys

    from codeactions.local.services.postgres import PostgresServer

    server = PostgresServer(FAULTS_STATE, PG_PORT)
    server.start()
    subprocess.run([sys.executable, "-m", "codeactions.cli", "migrate"],
                   env=_env(platform, DB_URI=server.url), cwd=REPO_ROOT, check=True,
                   capture_output=True)
    yield server
    server.stop()


def _runs_of(db_url: str, code_id: str) -> list[tuple[str, str | None, str]]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(CodeRun.status, CodeRun.exit_reason, CodeRun.result)
                                .where(CodeRun.code_id == uuid.UUID(code_id)))
            return [tuple(row) for row in rows]
    finally:
        engine.dispose()


def _in_thread(call) -> tuple[threading.Thread, dict]:  # noqa: ANN001
    box: dict = {}

    def target() -> None:
        try:
            box["response"] = call()
        except Exception as exc:  # the assertion names it
            box["error"] = exc
        box["at"] = time.monotonic()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def test_a_sync_call_while_redis_is_down_is_answered_and_leaves_no_queued_run(
    platform, own, own_redis, private_broker  # noqa: ANN001
):
    """An API and a worker of their own on a Redis that is then stopped: the worker cannot
    signal the run's end, the API learns it from PostgreSQL instead."""
    processes = own(REDIS=own_redis.url, RABBITMQ_URL=private_broker.url).worker().api()
    code = create_code(platform, HELLO)
    call = f"{processes.url}/action/endpoint/{code['id']}"
    assert requests.post(call, timeout=60).text == "hello "
    own_redis.stop()
    try:
        answer = requests.post(call, params={"n": "x"}, timeout=90)
        assert (answer.status_code, answer.text) == (200, "hello x")
    finally:
        own_redis.start()
    runs = _runs_of(platform.settings().sqlalchemy_url, code["id"])
    assert sorted(status for status, _, _ in runs) == ["completed", "completed"]


def test_a_sigkilled_workers_run_ends_within_30_seconds_without_beat(platform, db, own):  # noqa: ANN001
    """Its caller, still waiting, is told the platform failed (503, try again), not 500."""
    celery = make_celery(platform.settings())
    from worker.preparation import worker_name

    session_worker = f"{worker_name(['python'], platform.settings())}@{socket.gethostname()}"
    doomed = own().worker()
    celery.control.cancel_consumer("runs.python", destination=[session_worker], reply=True)
    try:
        code = create_code(platform, SLEEPER.format(seconds=50, word="never"), timeout=60)
        thread, box = _in_thread(lambda: requests.post(
            platform.url(f"/action/endpoint/{code['id']}"), timeout=120))
        url = platform.settings().sqlalchemy_url
        eventually(lambda: any(s == "started" for s, _, _ in _runs_of(url, code["id"])), 60)
        os.kill(doomed.children[0].pid, signal.SIGKILL)
        killed_at = time.monotonic()
    finally:
        celery.control.add_consumer("runs.python", destination=[session_worker], reply=True)
    thread.join(60)
    assert "response" in box, box
    answer = box["response"]
    took = box["at"] - killed_at
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"].isdigit()
    assert took <= 30, f"the lost run ended {took:.1f} s after its worker was killed"
    with db.session() as session:
        run = session.get(CodeRun, uuid.UUID(answer.json()["run_id"]))
        assert (run.status, run.exit_reason, run.executions) == ("failed", "worker_lost", 1)


def test_a_postgresql_restart_during_a_run_keeps_its_outcome(
    platform, own, own_postgres, private_broker  # noqa: ANN001
):
    processes = own(DB_URI=own_postgres.url, RABBITMQ_URL=private_broker.url)
    processes.worker().api()
    code = requests.post(f"{processes.url}/code", params={
        "name": "survivor", "language": "python", "type": "endpoint",
        "project_uuid": str(uuid.uuid4())}, data=SLEEPER.format(seconds=6, word="survived"),
        timeout=30).json()
    thread, box = _in_thread(lambda: requests.post(
        f"{processes.url}/action/endpoint/{code['id']}", timeout=120))
    eventually(lambda: any(s == "started" for s, _, _ in _runs_of(own_postgres.url, code["id"])),
               60)
    os.kill(own_postgres.process.pid, signal.SIGKILL)
    time.sleep(3)
    own_postgres.start()
    thread.join(120)
    assert "error" not in box, box
    assert (box["response"].status_code, box["response"].text) == (200, "survived")
    assert _runs_of(own_postgres.url, code["id"]) == [("completed", "completed", "survived")]
    # Connections pooled before the restart are not used dead (pinged after idling).
    quick = requests.post(f"{processes.url}/code", params={
        "name": "after", "language": "python", "type": "endpoint",
        "project_uuid": str(uuid.uuid4())}, data=SLEEPER.format(seconds=0, word="after"),
        timeout=30)
    assert quick.status_code in (200, 201), quick.text
    answers = [requests.post(f"{processes.url}/action/endpoint/{quick.json()['id']}",
                             timeout=60) for _ in range(3)]
    assert [(a.status_code, a.text) for a in answers] == [(200, "after")] * 3


def test_a_broker_restart_leaves_every_worker_consuming(platform, own, private_broker):  # noqa: ANN001
    processes = own(RABBITMQ_URL=private_broker.url).worker().api()
    slow = create_code(platform, SLEEPER.format(seconds=3, word="slow"))
    hello = create_code(platform, HELLO)
    thread, box = _in_thread(lambda: requests.post(
        f"{processes.url}/action/endpoint/{slow['id']}", timeout=120))
    time.sleep(1.5)  # its task is in flight when the broker goes
    private_broker.stop()
    private_broker.start()
    thread.join(120)
    # Every call after the restart is served (the worker resumed consuming).
    for n in range(5):
        answer = eventually(lambda n=n: (r := requests.post(
            f"{processes.url}/action/endpoint/{hello['id']}", params={"n": str(n)},
            timeout=60)).status_code == 200 and r, 60, every=1)
        assert answer.text == f"hello {n}"
    assert {s for s, _, _ in _runs_of(platform.settings().sqlalchemy_url, slow["id"])} <= {
        "completed", "failed"}


def test_a_batch_is_all_or_none_when_the_broker_is_down(platform, own, private_broker):  # noqa: ANN001
    processes = own(RABBITMQ_URL=private_broker.url).api()
    codes = [create_code(platform, HELLO, type="flow") for _ in range(3)]
    private_broker.stop()
    try:
        answer = requests.post(f"{processes.url}/coderun/batch", json={
            "runs": [{"code_id": code["id"]} for code in codes]}, timeout=60)
    finally:
        private_broker.start()
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"].isdigit()
    assert "unavailable" in answer.json()["message"]
    url = platform.settings().sqlalchemy_url
    runs = [run for code in codes for run in _runs_of(url, code["id"])]
    assert [(status, reason) for status, reason, _ in runs] == [("failed", "enqueue_failed")] * 3


def test_a_cancelled_runs_callback_survives_a_redis_outage(
    platform, own, own_redis, private_broker, receiver  # noqa: ANN001
):
    """No worker consumes the private broker yet, so the run stays queued; it is cancelled
    while Redis is down (its waiters cannot be signalled), and its callback is still sent
    once a worker is there."""
    processes = own(REDIS=own_redis.url, RABBITMQ_URL=private_broker.url).api()
    code = create_code(platform, HELLO, type="flow")
    run = requests.post(f"{processes.url}/coderun", json={
        "code_id": code["id"], "callback_url": receiver.url()}, timeout=30).json()
    own_redis.stop()
    try:
        cancelled = requests.post(f"{processes.url}/coderun/{run['id']}/cancel", timeout=60)
    finally:
        own_redis.start()
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["exit_reason"]) == (
        "failed", "cancelled")
    processes.worker()  # takes the callback's delivery (and skips the cancelled run)
    eventually(lambda: receiver.requests, 60)
    assert receiver.requests[0]["headers"]["X-CodeActions-Run-Id"] == run["id"]


def test_deleting_a_code_answers_its_waiting_sync_call_at_once(platform):  # noqa: ANN001
    code = create_code(platform, SLEEPER.format(seconds=40, word="late"), timeout=60)
    thread, box = _in_thread(lambda: requests.post(
        platform.url(f"/action/endpoint/{code['id']}"), timeout=120))
    url = platform.settings().sqlalchemy_url
    eventually(lambda: any(s == "started" for s, _, _ in _runs_of(url, code["id"])), 60)
    deleted_at = time.monotonic()
    assert requests.delete(platform.url(f"/code/{code['id']}"), timeout=30).status_code < 300
    thread.join(30)
    assert "response" in box, box
    assert box["response"].status_code == 410, box["response"].text
    assert box["response"].json()["field"] == "code_id"
    assert box["at"] - deleted_at < 5
