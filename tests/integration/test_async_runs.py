"""Async runs: submit, poll, long-poll, batches, and back-pressure."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests
from sqlalchemy import func, select

from shared.runs.model import CodeRun
from tests.integration.helpers import container_gone, create_code

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
        ({"code_id": code["id"], "callback_url": "http://10.0.0.1:9/cb"}, "callback_url"),
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
    # Pool containers carry no run label: the run's own container id is what must be gone.
    assert body["container_id"] and container_gone(body["container_id"])
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


def test_run_list_pages_and_status_filter(platform):
    code = create_code(platform, "def Run(engine):\n    assert engine.params.get('ok')\n",
                       type="flow")
    submitted = [requests.post(platform.url("/coderun"), json={
        "code_id": code["id"], "params": {"ok": "1"} if i % 2 else {}}).json()
        for i in range(5)]
    for run in submitted:
        requests.get(platform.url(f"/coderun/{run['id']}"), params={"wait": 30})
    everything = requests.get(platform.url("/coderun"), params={"code_id": code["id"]})
    assert everything.status_code == 200
    assert [r["id"] for r in everything.json()] == [r["id"] for r in reversed(submitted)]
    assert json.loads(everything.headers["X-Pagination"])["total"] == 5
    first = requests.get(platform.url("/coderun"), params={
        "code_id": code["id"], "page": 1, "page_size": 2})
    third = requests.get(platform.url("/coderun"), params={
        "code_id": code["id"], "page": 3, "page_size": 2})
    assert [r["id"] for r in first.json()] == [everything.json()[0]["id"],
                                                everything.json()[1]["id"]]
    assert [r["id"] for r in third.json()] == [everything.json()[4]["id"]]
    paging = json.loads(first.headers["X-Pagination"])
    assert paging["total_pages"] == 3 and paging["next_page"] == 2
    failed = requests.get(platform.url("/coderun"), params={
        "code_id": code["id"], "status": "failed"}).json()
    completed = requests.get(platform.url("/coderun"), params={
        "code_id": code["id"], "status": "completed"}).json()
    assert len(failed) == 3 and {r["status"] for r in failed} == {"failed"}
    assert len(completed) == 2 and {r["status"] for r in completed} == {"completed"}
    for bad, field in [({"status": "done"}, "status"), ({"page": 0}, "page"),
                       ({"page_size": 1001}, "page_size")]:
        response = requests.get(platform.url("/coderun"), params={"code_id": code["id"], **bad})
        assert response.status_code == 400, (bad, response.text)
        assert field in response.json()["message"]


def test_run_records_its_timeline_worker_and_container(platform):
    code = create_code(platform, ECHO, type="flow")
    run = requests.post(platform.url("/coderun"), json={"code_id": code["id"],
                                                        "params": {"n": "1"}}).json()
    done = requests.get(platform.url(f"/coderun/{run['id']}"), params={"wait": 30}).json()
    assert done["queued_at"] == done["created_at"]
    assert done["queued_at"] <= done["started_at"] <= done["finished_at"]
    assert done["worker"] and done["container_id"] and done["exit_reason"] == "completed"


def test_a_sync_caller_that_disconnects_cancels_its_run(platform):
    code = create_code(platform, SLEEPY, type="endpoint", timeout=60)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(platform.url(f"/action/endpoint/{code['id']}"), params={"s": "40"},
                      timeout=3)
    (run,) = requests.get(platform.url("/coderun"), params={"code_id": code["id"]}).json()
    ended = _wait_status(platform, run["id"], "failed", seconds=10)
    assert ended["status"] == "failed" and ended["exit_reason"] == "cancelled"
    assert ended["container_id"] and container_gone(ended["container_id"], seconds=10)
