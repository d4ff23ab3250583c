"""The real API code, created in-process with settings overrides, against the real services:
for behaviour that needs a setting the shared test API does not have."""

from __future__ import annotations

import uuid

import pytest

from api.app import create_app
from codeactions.bootstrap import bootstrap
from tests.integration.helpers import create_code


@pytest.fixture()
def make_client(platform):  # noqa: ANN001, ANN201
    apps = []

    def _make(**overrides: object):  # noqa: ANN202
        app = create_app(bootstrap(platform.settings(**overrides)))
        apps.append(app)
        return app.test_client()

    yield _make
    for app in apps:
        app.extensions["codeactions"].db.dispose()


def test_health_is_503_when_a_dependency_is_down(make_client):
    client = make_client(redis="redis://127.0.0.1:1/0", health_check_cache_time=0)
    response = client.get("/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unhealthy"
    assert body["redis"]["status"] == "down" and body["database"]["status"] == "up"
    assert client.get("/healthz").status_code == 200  # liveness stays cheap and green


def test_rate_limit_per_code(platform, make_client):
    client = make_client(code_limiter_max_requests=3, code_limiter_window=60)
    limited = create_code(platform, "def Run(engine):\n    engine.result.set('ok')\n")
    other = create_code(platform, "def Run(engine):\n    engine.result.set('ok')\n")
    statuses = [client.post(f"/action/endpoint/{limited['id']}").status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    refused = client.post(f"/action/endpoint/{limited['id']}")
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert "rate limit" in refused.get_json()["message"]
    # The count is per code.
    assert client.post(f"/action/endpoint/{other['id']}").status_code == 200


def test_run_route_token(platform, make_client):
    client = make_client(auth_token="s3cret")
    code = create_code(platform, "def Run(engine):\n    engine.result.set('ran')\n", type="flow")
    assert client.post(f"/run/{code['id']}").status_code == 401
    assert client.post(f"/run/{code['id']}",
                       headers={"Authorization": "Token wrong"}).status_code == 401
    ok = client.post(f"/run/{code['id']}", headers={"Authorization": "Token s3cret"})
    assert ok.status_code == 200 and ok.get_json()["result"]["result"] == "ran"


def test_request_body_limit_at_and_past(platform, make_client, db):
    from sqlalchemy import func, select

    from shared.runs.model import CodeRun

    client = make_client(request_body_max_bytes=1000)
    code = create_code(platform, "def Run(engine):\n    engine.result.set(str(len(engine.body)))\n")
    at_limit = client.post(f"/action/endpoint/{code['id']}", data="x" * 1000)
    assert at_limit.status_code == 200 and at_limit.get_data(as_text=True) == "1000"
    past = client.post(f"/action/endpoint/{code['id']}", data="x" * 1001)
    assert past.status_code == 413
    assert past.get_json() == {"message": "request body is too large (at most 1000 bytes)",
                               "field": "body"}
    with db.session() as session:  # the refused call left no run behind
        count = session.scalar(select(func.count()).select_from(CodeRun).where(
            CodeRun.code_id == code["id"]))
    assert count == 1


def test_back_pressure_refuses_new_runs_when_the_queue_is_full(platform, make_client, db):
    import time

    import requests
    from sqlalchemy import func, select

    from shared.runs.model import CodeRun

    sleepy = create_code(platform, "import time\ndef Run(engine):\n    time.sleep(4)\n",
                         type="endpoint", timeout=20)
    # The python worker runs 4 at a time: 8 submissions leave 4 waiting in runs.python.
    submitted = [
        requests.post(platform.url("/coderun"), json={"code_id": sleepy["id"]}).json()
        for _ in range(8)
    ]
    time.sleep(1.5)
    client = make_client(worker_pool_queue_size=1)
    with db.session() as session:
        before = session.scalar(select(func.count()).select_from(CodeRun))
    refused = client.post("/coderun", json={"code_id": sleepy["id"]})
    assert refused.status_code == 503, refused.get_data(as_text=True)
    assert int(refused.headers["Retry-After"]) >= 1
    assert "waiting" in refused.get_json()["message"]
    assert client.post(f"/action/endpoint/{sleepy['id']}").status_code == 503
    # A sync call learns its code's language with its insert: a full queue makes it read
    # its code first; an unknown or flow code stays 404 (a full queue tells nothing of it).
    flow = create_code(platform, "def Run(engine):\n    pass\n", type="flow")
    assert client.post(f"/action/endpoint/{flow['id']}").status_code == 404
    assert client.post(f"/action/endpoint/{uuid.uuid4()}").status_code == 404
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(CodeRun)) == before
    # Only the code's own queue refuses it: JavaScript's is not full.
    other = create_code(platform, 'function Run(engine) {\n  engine.result.set("js");\n}\n'
                        "module.exports = { Run };\n", language="javascript")
    answered = client.post(f"/action/endpoint/{other['id']}")
    assert (answered.status_code, answered.get_data(as_text=True)) == (200, "js")
    for run in submitted:  # drain, so later tests find an idle worker
        requests.get(platform.url(f"/coderun/{run['id']}"), params={"wait": 30})
    assert client.post("/coderun", json={"code_id": sleepy["id"]}).status_code == 202
