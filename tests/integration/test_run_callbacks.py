"""Run callbacks: the finished run is POSTed (signed) to the caller's URL by a worker,
retried with backoff, every attempt recorded on the run; private addresses are refused."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
import uuid

import pytest
import requests

from shared.codes.model import Code
from shared.runs import store as run_store
from shared.runs import submission as run_submission
from tests.conftest import CALLBACK_SECRET
from tests.integration.callback_receiver import Receiver
from tests.integration.helpers import create_code
from worker.callback_sender import CallbackSender

ECHO = "def Run(engine):\n    engine.result.set('echo:' + engine.body)\n"
SLEEPY = "import time\ndef Run(engine):\n    time.sleep(float(engine.params.get('s')))\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _submit(platform, code_id: str, callback_url: str, **fields) -> dict:  # noqa: ANN001
    response = requests.post(platform.url("/coderun"), json={
        "code_id": code_id, "callback_url": callback_url, **fields}, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()


def _run(platform, run_id: str) -> dict:  # noqa: ANN001
    return requests.get(platform.url(f"/coderun/{run_id}"), timeout=10).json()


def _wait_callback(platform, run_id: str, until, seconds: float = 30) -> dict:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while True:
        run = _run(platform, run_id)
        if until(run["callback"]) or time.monotonic() > deadline:
            return run
        time.sleep(0.1)


def _verify_signature(header: str, body: bytes) -> None:
    parts = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(CALLBACK_SECRET.encode(), f"{parts['t']}.".encode() + body,
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected)
    assert abs(time.time() - int(parts["t"])) < 120


def test_finished_run_is_posted_signed_and_recorded(platform, receiver):
    code = create_code(platform, ECHO, type="flow")
    run = _submit(platform, code["id"], receiver.url("/hook?x=1"), body="hi")
    assert run["callback"] == {"url": receiver.url("/hook?x=1"), "status": "pending",
                               "attempts": []}
    done = _wait_callback(platform, run["id"], lambda cb: cb["status"] != "pending")
    assert done["callback"]["status"] == "delivered", done["callback"]
    (attempt,) = done["callback"]["attempts"]
    assert attempt["attempt"] == 1 and attempt["status_code"] == 200
    assert attempt["error"] is None and attempt["duration_ms"] >= 0
    (sent,) = receiver.requests
    assert sent["path"] == "/hook?x=1"
    assert sent["headers"]["Content-Type"] == "application/json"
    assert sent["headers"]["X-CodeActions-Run-Id"] == run["id"]
    _verify_signature(sent["headers"]["X-CodeActions-Signature"], sent["body"])
    posted = json.loads(sent["body"])
    # The callback carries the run exactly as GET /coderun/<id> shows it (minus delivery).
    assert posted == {k: v for k, v in done.items() if k != "callback"}
    assert posted["status"] == "completed" and posted["result"] == "echo:hi"


def test_a_failed_run_is_called_back_too(platform, receiver):
    code = create_code(platform, "def Run(engine):\n    raise ValueError('nope')\n", type="flow")
    run = _submit(platform, code["id"], receiver.url())
    done = _wait_callback(platform, run["id"], lambda cb: cb["status"] != "pending")
    assert done["callback"]["status"] == "delivered"
    posted = json.loads(receiver.requests[0]["body"])
    assert posted["status"] == "failed" and "nope" in posted["result"]


def test_receiver_down_then_up_gets_the_retry(platform):
    port = _free_port()
    code = create_code(platform, ECHO, type="flow")
    run = _submit(platform, code["id"], f"http://127.0.0.1:{port}/late")
    failed_once = _wait_callback(platform, run["id"], lambda cb: len(cb["attempts"]) >= 1)
    first = failed_once["callback"]["attempts"][0]
    assert first["status_code"] is None and "onnection" in first["error"]
    assert failed_once["callback"]["status"] == "pending"
    late = Receiver(port=port)
    try:
        done = _wait_callback(platform, run["id"], lambda cb: cb["status"] != "pending")
        assert done["callback"]["status"] == "delivered", done["callback"]
        attempts = done["callback"]["attempts"]
        assert attempts[-1]["status_code"] == 200 and len(attempts) >= 2
        assert [a["attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
        assert len(late.requests) == 1
        # Backoff: the attempts are spread out, not fired back to back.
        times = [a["at"] for a in attempts]
        assert times == sorted(times)
    finally:
        late.close()


def test_gives_up_after_the_configured_attempts(platform):
    failing = Receiver(status=500)
    try:
        code = create_code(platform, ECHO, type="flow")
        run = _submit(platform, code["id"], failing.url())
        done = _wait_callback(platform, run["id"], lambda cb: cb["status"] != "pending",
                              seconds=60)
        callback = done["callback"]
        assert callback["status"] == "failed"
        assert len(callback["attempts"]) == 4  # FLOWS_CODE_ACTIONS_CALLBACK_MAX_ATTEMPTS
        assert {a["status_code"] for a in callback["attempts"]} == {500}
        assert all("500" in a["error"] for a in callback["attempts"])
        time.sleep(1.5)
        assert len(failing.requests) == 4  # and no fifth one
    finally:
        failing.close()


def test_cancelled_queued_run_is_called_back(platform, receiver):
    code = create_code(platform, SLEEPY, type="flow", timeout=20)
    busy = [requests.post(platform.url("/coderun"), json={
        "code_id": code["id"], "params": {"s": "3"}}).json() for _ in range(4)]
    run = _submit(platform, code["id"], receiver.url(), params={"s": "3"})
    cancelled = requests.post(platform.url(f"/coderun/{run['id']}/cancel"))
    assert cancelled.status_code == 200
    done = _wait_callback(platform, run["id"], lambda cb: cb["status"] != "pending")
    assert done["callback"]["status"] == "delivered"
    posted = json.loads(receiver.requests[0]["body"])
    assert posted["status"] == "failed" and posted["exit_reason"] == "cancelled"
    for other in busy:
        requests.get(platform.url(f"/coderun/{other['id']}"), params={"wait": 30})


def test_batch_runs_each_call_back(platform, receiver):
    code = create_code(platform, ECHO, type="endpoint")
    items = [{"code_id": code["id"], "body": str(i), "callback_url": receiver.url(f"/b{i}")}
             for i in range(3)]
    runs = requests.post(platform.url("/coderun/batch"), json={"runs": items}).json()
    for run in runs:
        done = _wait_callback(platform, run["id"], lambda cb: cb["status"] != "pending")
        assert done["callback"]["status"] == "delivered"
    assert sorted(r["path"] for r in receiver.requests) == ["/b0", "/b1", "/b2"]


@pytest.mark.parametrize("url", [
    "ftp://example.com/x", "not a url", "http:///nohost", "http://10.1.2.3/hook",
    "http://169.254.169.254/latest/meta-data", "http://[fd00::1]/x", "http://192.168.0.1/",
    "http://user:secret@example.com/", "https://example.com:99999/",
])
def test_bad_callback_urls_are_refused_and_nothing_is_created(platform, db, url):
    code = create_code(platform, ECHO, type="flow")
    response = requests.post(platform.url("/coderun"), json={
        "code_id": code["id"], "callback_url": url})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "callback_url"
    listed = requests.get(platform.url("/coderun"), params={"code_id": code["id"]}).json()
    assert listed == []
    batch = requests.post(platform.url("/coderun/batch"), json={"runs": [
        {"code_id": code["id"]}, {"code_id": code["id"], "callback_url": url}]})
    assert batch.status_code == 400 and batch.json()["field"] == "runs.1.callback_url"


def test_worker_refuses_names_resolving_to_private_addresses(platform, db, receiver):
    """Production policy (no allow-list): `localhost` resolves to loopback, so the worker
    refuses to connect and records why; the receiver on loopback hears nothing."""
    code = create_code(platform, ECHO, type="flow")
    with db.session() as session:
        stored = session.get(Code, uuid.UUID(code["id"]))
    url = f"http://localhost:{receiver.port}/hook"
    run = run_submission.create_run(db, run_submission.RunRequest(stored, callback_url=url))
    with db.session() as session:  # as if it had run: only ended runs are called back
        run_store.finish(session, run.id, "completed", from_status="queued", result="x")
        session.commit()
    sender = CallbackSender(
        platform.settings(callback_allowed_networks="", callback_max_attempts=2), db)
    assert sender.deliver(str(run.id), attempt=1) is not None  # a retry is due
    assert sender.deliver(str(run.id), attempt=2) is None  # given up
    callback = _run(platform, str(run.id))["callback"]
    assert callback["status"] == "failed"
    assert all(a["error"].startswith("refused: localhost resolves to a non-public address")
               for a in callback["attempts"])
    assert receiver.requests == []


def test_openapi_describes_the_run_routes(platform):
    spec = requests.get(platform.url("/openapi.json")).json()
    for path, method in [("/coderun", "post"), ("/coderun", "get"), ("/coderun/batch", "post"),
                         ("/coderun/{run_id}", "get"), ("/coderun/{run_id}/cancel", "post")]:
        assert method in spec["paths"][path], (path, method)
    schemas = spec["components"]["schemas"]
    assert "callback_url" in schemas["RunSubmit"]["properties"]
    assert "attempts" in schemas["RunCallback"]["properties"]
    assert "callback" in schemas["CodeRun"]["properties"]
    parameters = {p["name"] for p in spec["paths"]["/coderun"]["get"]["parameters"]}
    assert {"code_id", "status", "page", "page_size", "after", "before"} <= parameters
