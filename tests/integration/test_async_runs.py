"""Async runs: submit, poll, long-poll, batches, and back-pressure."""

from __future__ import annotations

import time
import uuid

import requests
from sqlalchemy import func, select

from shared.models import CodeRun
from tests.integration.helpers import create_code

ECHO = "def Run(engine):\n    engine.result.set(engine.params.get('n') + ':' + engine.body)\n"
SLEEPY = "import time\ndef Run(engine):\n    time.sleep(float(engine.params.get('s')))\n"


def _runs_of(db, code_id: str) -> int:  # noqa: ANN001
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(CodeRun).where(
            CodeRun.code_id == uuid.UUID(code_id)))


def test_submit_then_long_poll(platform):
    code = create_code(platform, ECHO, type="flow")
    response = requests.post(platform.url("/coderun"), json={
        "code_id": code["id"], "params": {"n": "1"}, "body": " payload ",
        "headers": {"X-A": "b", "X-List": ["c", "d"]}})
    assert response.status_code == 202, response.text
    run = response.json()
    assert run["status"] == "queued" and run["code_id"] == code["id"]
    assert response.headers["Location"].endswith(f"/coderun/{run['id']}")
    assert run["headers"] == {"X-A": ["b"], "X-List": ["c", "d"]}
    done = requests.get(platform.url(f"/coderun/{run['id']}"), params={"wait": 30}).json()
    assert done["status"] == "completed" and done["result"] == "1:payload"


def test_wait_returns_the_unfinished_run_when_it_times_out(platform):
    code = create_code(platform, SLEEPY, type="flow", timeout=20)
    run = requests.post(platform.url("/coderun"), json={
        "code_id": code["id"], "params": {"s": "8"}}).json()
    started = time.monotonic()
    polled = requests.get(platform.url(f"/coderun/{run['id']}"), params={"wait": 1})
    assert polled.status_code == 200
    assert polled.json()["status"] in ("queued", "started")
    assert time.monotonic() - started < 8
    bad = requests.get(platform.url(f"/coderun/{run['id']}"), params={"wait": 61})
    assert bad.status_code == 400 and "wait" in bad.json()["message"]


def test_batch_in_order_and_limits(platform, db):
    code = create_code(platform, ECHO, type="endpoint")
    items = [{"code_id": code["id"], "params": {"n": str(i)}} for i in range(3)]
    response = requests.post(platform.url("/coderun/batch"), json={"runs": items})
    assert response.status_code == 202, response.text
    runs = response.json()
    assert [r["params"]["n"] for r in runs] == ["0", "1", "2"]
    results = [requests.get(platform.url(f"/coderun/{r['id']}"), params={"wait": 30}).json()
               for r in runs]
    assert [r["result"] for r in results] == ["0:", "1:", "2:"]
    before = _runs_of(db, code["id"])
    too_many = requests.post(platform.url("/coderun/batch"),
                             json={"runs": [items[0]] * 21})
    assert too_many.status_code == 400 and "runs" in too_many.json()["message"]
    one_unknown = requests.post(platform.url("/coderun/batch"), json={
        "runs": [items[0], {"code_id": str(uuid.uuid4())}]})
    assert one_unknown.status_code == 404
    assert one_unknown.json()["field"] == "runs.1.code_id"
    assert _runs_of(db, code["id"]) == before  # nothing half-created


def test_bad_submissions(platform):
    code = create_code(platform, ECHO, type="flow")
    cases = [
        ({}, "code_id"),
        ({"code_id": "nope"}, "code_id"),
        ({"code_id": code["id"], "params": {"a": 1}}, "params"),
        ({"code_id": code["id"], "headers": {"a": 1}}, "headers"),
        ({"code_id": code["id"], "callback_url": "http://127.0.0.1:9/cb"}, "callback_url"),
    ]
    for payload, field in cases:
        response = requests.post(platform.url("/coderun"), json=payload)
        assert response.status_code == 400, (payload, response.text)
        assert field in response.json()["message"] or response.json().get("field") == field
    missing = requests.post(platform.url("/coderun"), json={"code_id": str(uuid.uuid4())})
    assert missing.status_code == 404


def _wait_status(platform, run_id: str, wanted: str, seconds: float = 30) -> dict:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while True:
        run = requests.get(platform.url(f"/coderun/{run_id}")).json()
        if run["status"] == wanted or time.monotonic() > deadline:
            return run
        time.sleep(0.1)


def test_cancel_a_started_run_kills_its_container(platform):
    import docker

    code = create_code(platform, SLEEPY, type="flow", timeout=60)
    run = requests.post(platform.url("/coderun"), json={
        "code_id": code["id"], "params": {"s": "50"}}).json()
    assert _wait_status(platform, run["id"], "started")["status"] == "started"
    time.sleep(0.5)  # let the container start
    cancelled = requests.post(platform.url(f"/coderun/{run['id']}/cancel"))
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["status"] == "failed" and body["result"] == "cancelled"
    assert body["exit_reason"] == "cancelled"
    leftovers = docker.from_env().containers.list(
        all=True, filters={"label": f"codeactions.run_id={run['id']}"})
    assert leftovers == []
    again = requests.post(platform.url(f"/coderun/{run['id']}/cancel"))
    assert again.status_code == 200 and again.json()["result"] == "cancelled"


def test_cancel_a_queued_run_means_it_never_starts(platform):
    code = create_code(platform, SLEEPY, type="flow", timeout=20)
    # Four runs keep the python worker's four slots busy; the fifth waits in the queue.
    busy = [requests.post(platform.url("/coderun"), json={
        "code_id": code["id"], "params": {"s": "3"}}).json() for _ in range(4)]
    waiting = requests.post(platform.url("/coderun"), json={
        "code_id": code["id"], "params": {"s": "3"}}).json()
    cancelled = requests.post(platform.url(f"/coderun/{waiting['id']}/cancel"))
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "failed" and cancelled.json()["result"] == "cancelled"
    for run in busy:
        requests.get(platform.url(f"/coderun/{run['id']}"), params={"wait": 30})
    time.sleep(1)
    final = requests.get(platform.url(f"/coderun/{waiting['id']}")).json()
    assert final["status"] == "failed" and final["started_at"] is None


def test_cancel_after_completion_and_unknown(platform):
    code = create_code(platform, ECHO, type="flow")
    run = requests.post(platform.url("/coderun"), json={
        "code_id": code["id"], "params": {"n": "1"}}).json()
    requests.get(platform.url(f"/coderun/{run['id']}"), params={"wait": 30})
    late = requests.post(platform.url(f"/coderun/{run['id']}/cancel"))
    assert late.status_code == 409 and "completed" in late.json()["message"]
    assert requests.post(platform.url(f"/coderun/{uuid.uuid4()}/cancel")).status_code == 404
