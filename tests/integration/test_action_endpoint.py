"""`/action/endpoint/<id>` end to end: API → RabbitMQ → worker → container → PostgreSQL/S3."""

from __future__ import annotations

import json
import uuid

import requests
from sqlalchemy import select

from shared.logs.model import CodeLog
from shared.runs.model import CodeRun
from tests.integration.helpers import call, create_code

ECHO = '''
import json

def Run(engine):
    engine.result.set({
        "name": engine.params.get("name"),
        "missing_param": engine.params.get("nope"),
        "params": dict(engine.params.items()),
        "body": engine.body,
        "agent": engine.header.get("User-Agent"),
        "missing_header": engine.header.get("X-Not-There"),
        "multi": dict(engine.header.items()).get("X-Multi"),
        "request_body": engine.request.body,
        "request_param": engine.request.params.get("name"),
    }, content_type="json")
'''


def test_readme_example(platform):
    code = create_code(platform, '''
import json

def Run(engine):
    name = engine.params.get("who")
    data = json.loads(engine.body or "{}")
    engine.log.info(f"hello {name}")
    engine.result.set({"ok": True, "who": name, "data": data}, status_code=201,
                      content_type="json")
''')
    response = call(platform, code["id"], params={"who": "ana"}, json={"x": 1})
    assert response.status_code == 201, response.text
    assert response.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert response.json() == {"ok": True, "who": "ana", "data": {"x": 1}}


def test_params_body_headers(platform):
    code = create_code(platform, ECHO)
    response = call(
        platform, code["id"],
        params=[("name", "first"), ("name", "second"), ("other", "o")],
        data="  padded body \n",
        headers={"User-Agent": "tester/1", "X-Multi": "a"},
    )
    assert response.status_code == 200, response.text
    got = response.json()
    assert got["name"] == "first"  # only the first value of a repeated key
    assert got["missing_param"] is None
    assert got["params"] == {"name": "first", "other": "o"}
    assert got["body"] == "padded body"
    assert got["request_body"] == "padded body" and got["request_param"] == "first"
    assert got["agent"] == "tester/1"
    assert got["missing_header"] == ""
    assert got["multi"] == ["a"]


def test_empty_body_and_any_method(platform):
    code = create_code(platform, ECHO)
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        response = call(platform, code["id"], method=method)
        assert response.status_code == 200, (method, response.text)
        assert response.json()["body"] == ""


def test_result_types_and_content_types(platform):
    cases = [
        ('engine.result.set("plain")', 200, "text/plain; charset=UTF-8", "plain"),
        ('engine.result.set("<b>x</b>", content_type="html")', 200,
         "text/html; charset=UTF-8", "<b>x</b>"),
        ('engine.result.set([1, 2], status_code=202)', 202, "text/plain; charset=UTF-8",
         "[1, 2]"),
        ('engine.result.set("a")\n    engine.result.set("second", status_code=418)', 418,
         "text/plain; charset=UTF-8", "second"),
        ("pass", 200, "text/plain; charset=UTF-8", ""),
    ]
    for statement, status, content_type, body in cases:
        code = create_code(platform, f"def Run(engine):\n    {statement}\n")
        response = call(platform, code["id"])
        assert response.status_code == status, (statement, response.text)
        assert response.headers["Content-Type"] == content_type
        assert response.text == body


def test_logs_in_order_truncated_and_stored(platform, db, s3):
    code = create_code(platform, '''
def Run(engine):
    engine.log.debug("one")
    engine.log.info(2)
    engine.log.error("three")
    engine.log.info("x" * 8000)
    engine.log.info("y" * 8001)
    engine.result.set("done")
''')
    response = call(platform, code["id"])
    assert response.status_code == 200 and response.text == "done"
    runs = requests.get(platform.url("/coderun"), params={"code_id": code["id"]}).json()
    assert len(runs) == 1 and runs[0]["status"] == "completed"
    run_id = runs[0]["id"]
    page = requests.get(platform.url("/codelog"),
                        params={"run_id": run_id, "order": "asc"}).json()
    assert page["total"] == 5 and page["page"] == 1 and page["last_page"] == 1
    assert [(e["type"], e["content"][:5]) for e in page["data"]] == [
        ("debug", "one"), ("info", "2"), ("error", "three"), ("info", "xxxxx"),
        ("info", "yyyyy")]
    assert len(page["data"][3]["content"]) == 8000
    assert len(page["data"][4]["content"]) == 8000
    one = requests.get(platform.url(f"/codelog/{page['data'][0]['id']}")).json()
    assert one["content"] == "one" and one["run_id"] == run_id
    # One S3 object for the whole run, holding every log.
    listing = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=f"{s3.prefix}/logs/")
    keys = [o["Key"] for o in listing.get("Contents", []) if f"/{run_id}/" in o["Key"]]
    assert len(keys) == 1 and keys[0].endswith(f"/{run_id}/{code['id']}/logs.json")
    archived = s3.get_run_logs(keys[0])
    assert [e["content"][:5] for e in archived] == ["one", "2", "three", "xxxxx", "yyyyy"]
    with db.session() as session:
        rows = session.scalars(select(CodeLog).where(CodeLog.run_id == uuid.UUID(run_id))).all()
        assert len(rows) == 5


def test_log_pages_by_code(platform):
    code = create_code(platform, '''
def Run(engine):
    for i in range(15):
        engine.log.info(f"line {i}")
''')
    for _ in range(2):
        assert call(platform, code["id"]).status_code == 200
    first = requests.get(platform.url("/codelog"), params={"code_id": code["id"]}).json()
    assert first["total"] == 30 and first["last_page"] == 2 and len(first["data"]) == 20
    second = requests.get(
        platform.url("/codelog"), params={"code_id": code["id"], "page": 2}
    ).json()
    assert second["page"] == 2 and len(second["data"]) == 10
    ids = {e["id"] for e in first["data"]} | {e["id"] for e in second["data"]}
    assert len(ids) == 30


def test_exception_fails_the_run_with_an_error_log(platform, db):
    code = create_code(platform, '''
def Run(engine):
    engine.log.info("before")
    raise ValueError("boom")
''')
    response = call(platform, code["id"])
    assert response.status_code == 500
    body = response.json()
    assert "boom" in body["error"] and body["run_id"]
    run = requests.get(platform.url(f"/coderun/{body['run_id']}")).json()
    assert run["status"] == "failed" and "boom" in run["result"]
    logs = requests.get(platform.url("/codelog"),
                        params={"run_id": body["run_id"], "order": "asc"}).json()
    assert [e["type"] for e in logs["data"][:2]] == ["info", "error"]
    assert logs["data"][1]["content"] == "Action execution failed: boom"
    # What the code printed (here: the traceback) follows as one debug log.
    assert [e["type"] for e in logs["data"][2:]] == ["debug"]
    assert "Traceback" in logs["data"][2]["content"] and "boom" in logs["data"][2]["content"]


def test_flow_and_unknown_codes_are_404_on_the_public_endpoint(platform, db):
    flow = create_code(platform, "def Run(engine):\n    pass\n", type="flow")
    assert call(platform, flow["id"]).status_code == 404
    assert call(platform, str(uuid.uuid4())).status_code == 404
    assert call(platform, "0123456789abcdef01234567").status_code == 404
    # The code is read by the run's insert: a refused call left no run behind.
    with db.session() as session:
        runs = select(CodeRun).where(CodeRun.code_id == uuid.UUID(flow["id"]))
        assert session.scalars(runs).all() == []
    assert requests.post(platform.url(f"/run/{flow['id']}"), timeout=60).status_code == 200


def test_endpoint_route_returns_plain_text(platform):
    code = create_code(platform, 'def Run(engine):\n    engine.result.set({"a": 1}, '
                                 'content_type="json")\n')
    response = requests.get(platform.url(f"/endpoint/{code['id']}"), timeout=60)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; charset=UTF-8"
    assert json.loads(response.text) == {"a": 1}


def test_run_route_returns_the_run(platform):
    code = create_code(platform, 'def Run(engine):\n    engine.result.set("ran")\n', type="flow")
    response = requests.post(platform.url(f"/run/{code['id']}"), timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code_id"] == code["id"]
    assert body["result"]["status"] == "completed" and body["result"]["result"] == "ran"


def test_coderun_list_and_time_filters(platform):
    code = create_code(platform, "def Run(engine):\n    pass\n")
    call(platform, code["id"])
    runs = requests.get(platform.url("/coderun"), params={"code_id": code["id"]}).json()
    assert len(runs) == 1
    run = runs[0]
    for key in ("started_at", "finished_at", "worker", "container_id", "exit_reason"):
        assert run[key], key
    early = requests.get(
        platform.url("/coderun"),
        params={"code_id": code["id"], "before": "2000-01-01T00:00:00"},
    ).json()
    assert early == []
    late = requests.get(
        platform.url("/coderun"),
        params={"code_id": code["id"], "after": "2000-01-01T00:00:00"},
    ).json()
    assert [r["id"] for r in late] == [run["id"]]
    with_bad = requests.get(platform.url("/coderun"), params={"code_id": code["id"],
                                                             "after": "2024-13-01"})
    assert with_bad.status_code == 400 and "after" in with_bad.json()["message"]


def test_run_row_holds_the_request(platform, db):
    code = create_code(platform, "def Run(engine):\n    engine.result.set('ok')\n")
    call(platform, code["id"], params={"a": "1"}, data="payload", headers={"X-T": "v"})
    with db.session() as session:
        run = session.scalars(
            select(CodeRun).where(CodeRun.code_id == uuid.UUID(code["id"]))
        ).one()
        assert run.params == {"a": "1"} and run.body == "payload"
        assert run.headers["X-T"] == ["v"]
        assert run.extra == {"status_code": 200, "content_type": "text"}
