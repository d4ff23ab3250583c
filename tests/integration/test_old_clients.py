"""What the Go service's clients rely on, over real HTTP (SPEC.md, "The old HTTP behaviour
clients depend on"): raw source whatever the Content-Type, an empty name, DELETE 200, lenient
`after`/`before`, newest first with `order`, every header value and `_` names reaching the
code, the old health bodies, and the old database settings."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
import requests
from sqlalchemy import insert, select, text

from shared.codes.model import Code
from shared.runs.model import CodeRun
from tests.integration.helpers import PROJECT, call, create_code, run_now

SOURCE = "def Run(engine):\n    engine.result.set('hi')\n"


def _post_code(platform, data, content_type: str, **params):  # noqa: ANN001, ANN202
    query = {"name": "old", "language": "python", "type": "endpoint", "project_uuid": PROJECT,
             **params}
    return requests.post(platform.url("/code"), params=query, data=data,
                         headers={"Content-Type": content_type}, timeout=10)


# --- creating and patching ---------------------------------------------------------------


@pytest.mark.parametrize("source", [
    SOURCE,
    "{not json\n",
    '["a JSON array", "is source too"]',
    '{"greeting": "a JSON object with neither source nor only code fields"}',
])
def test_raw_source_sent_as_json_is_stored_as_source(platform, source: str):
    response = _post_code(platform, source, "application/json")
    assert response.status_code == 201, response.text
    assert response.json()["source"] == source
    assert requests.get(platform.url(f"/code/{response.json()['id']}")).json()["source"] == source


def test_a_json_object_with_source_is_the_json_form_whatever_the_content_type(platform):
    body = json.dumps({"name": "from-json", "language": "python", "type": "flow",
                       "project_uuid": PROJECT, "source": SOURCE})
    response = requests.post(platform.url("/code"), data=body,
                             headers={"Content-Type": "text/plain"}, timeout=10)
    assert response.status_code == 201, response.text
    assert (response.json()["name"], response.json()["type"], response.json()["source"]) == (
        "from-json", "flow", SOURCE)
    bad = _post_code(platform, json.dumps({"source": 42}), "application/json")
    assert bad.status_code == 400 and bad.json()["field"] == "source"


def test_patch_takes_raw_source_as_json_and_json_fields(platform, db):
    code = create_code(platform, SOURCE)
    new_source = "def Run(engine):\n    engine.result.set({'v': 2}, content_type='json')\n"
    patched = requests.patch(platform.url(f"/code/{code['id']}"), data=new_source,
                             headers={"Content-Type": "application/json"}, timeout=10)
    assert patched.status_code == 200 and patched.json()["source"] == new_source
    renamed = requests.patch(platform.url(f"/code/{code['id']}"), json={"name": "renamed"},
                             timeout=10)
    assert renamed.status_code == 200
    assert (renamed.json()["name"], renamed.json()["source"]) == ("renamed", new_source)
    assert call(platform, code["id"]).json() == {"v": 2}
    with db.session() as session:
        stored = session.get(Code, uuid.UUID(code["id"]))
        assert (stored.name, stored.source) == ("renamed", new_source)


def test_name_may_be_empty_and_an_empty_name_or_type_keeps_the_stored_one(platform):
    response = _post_code(platform, SOURCE, "text/plain", name=None)
    assert response.status_code == 201 and response.json()["name"] == ""
    code = create_code(platform, SOURCE, name="kept")
    patched = requests.patch(platform.url(f"/code/{code['id']}"),
                             params={"name": "", "type": "", "timeout": 30}, timeout=10)
    assert patched.status_code == 200, patched.text
    assert (patched.json()["name"], patched.json()["type"], patched.json()["timeout"]) == (
        "kept", "endpoint", 30)


def test_delete_answers_200_with_an_empty_body(platform):
    code = create_code(platform, SOURCE)
    response = requests.delete(platform.url(f"/code/{code['id']}"), timeout=10)
    assert response.status_code == 200 and response.content == b""
    assert requests.get(platform.url(f"/code/{code['id']}")).status_code == 404
    assert requests.delete(platform.url(f"/code/{code['id']}")).status_code == 404
    spec = requests.get(platform.url("/openapi.json")).json()
    assert "200" in spec["paths"]["/code/{code_id}"]["delete"]["responses"]


# --- after / before ---------------------------------------------------------------------

MIDNIGHT = datetime(2024, 1, 1, tzinfo=UTC)
NOON = datetime(2024, 1, 1, 12, tzinfo=UTC)
NEXT_DAY = datetime(2024, 1, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def dated_code(platform, db) -> str:  # noqa: ANN001
    """A code with three runs created at known moments (midnight, noon, the next day)."""
    code = create_code(platform, SOURCE)
    with db.session() as session:
        for at in (MIDNIGHT, NOON, NEXT_DAY):
            session.execute(insert(CodeRun.__table__).values(
                id=uuid.uuid4(), code_id=uuid.UUID(code["id"]), status="completed", result="",
                extra={}, params={}, body="", headers={}, created_at=at, updated_at=at))
        session.commit()
    return code["id"]


def _created(platform, code_id: str, **params) -> list[datetime]:  # noqa: ANN001
    response = requests.get(platform.url("/coderun"), params={"code_id": code_id, **params},
                            timeout=10)
    assert response.status_code == 200, response.text
    return [datetime.fromisoformat(run["created_at"]) for run in response.json()]


@pytest.mark.parametrize(("after", "expected"), [
    ("2024-01-01", [NEXT_DAY, NOON, MIDNIGHT]),
    ("2024-01-01T06:00:00", [NEXT_DAY, NOON]),
    ("2024-01-01 06:00:00", [NEXT_DAY, NOON]),
    ("2024-01-01T06:00:00Z", [NEXT_DAY, NOON]),
    ("2024-01-01T09:00:00+03:00", [NEXT_DAY, NOON]),  # 06:00 UTC
    ("2024-01-01T07:00:00-0500", [NEXT_DAY, NOON]),  # noon UTC exactly: `after` includes it
    ("2024-01-01 11:59:59.999999", [NEXT_DAY, NOON]),
    ("2024-01-01T12:00:00.000001Z", [NEXT_DAY]),
    ("2024-01-01T12:00", [NEXT_DAY, NOON]),
    ("2024/01/01", [NEXT_DAY, NOON, MIDNIGHT]),
    ("Mon, 01 Jan 2024 06:00:00 GMT", [NEXT_DAY, NOON]),
    ("yesterday", []),
])
def test_after_accepts_the_old_date_forms(platform, dated_code, after: str, expected):
    assert _created(platform, dated_code, after=after) == expected


def test_before_and_both_bounds(platform, dated_code):
    assert _created(platform, dated_code, before="2024-01-01 12:00:00.5") == [NOON, MIDNIGHT]
    assert _created(platform, dated_code, before="2024-01-01T11:00:00+00:00") == [MIDNIGHT]
    assert _created(platform, dated_code, after="2024-01-01T00:00:01Z",
                    before="2024-01-01T23:59:59.999Z") == [NOON]
    assert _created(platform, dated_code, before="tomorrow") == [NEXT_DAY, NOON, MIDNIGHT]


@pytest.mark.parametrize("field", ["after", "before"])
@pytest.mark.parametrize("value", ["2024-13-01", "soon", "5", "2024-01-01T25:00:00",
                                   "2024-01-01T00:00:00+25:00", ""])
def test_a_bad_date_is_a_400_naming_the_field(platform, dated_code, field: str, value: str):
    response = requests.get(platform.url("/coderun"),
                            params={"code_id": dated_code, field: value}, timeout=10)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field and field in response.json()["message"]


# --- ordering ---------------------------------------------------------------------------


def test_code_and_run_lists_are_newest_first_with_order_for_the_other_way(
    platform, dated_code
):
    project = str(uuid.uuid4())
    ids = [create_code(platform, SOURCE, project_uuid=project)["id"] for _ in range(3)]
    listed = requests.get(platform.url("/code"), params={"project_uuid": project}).json()
    assert [c["id"] for c in listed] == ids[::-1]
    oldest_first = requests.get(platform.url("/code"),
                                params={"project_uuid": project, "order": "asc"}).json()
    assert [c["id"] for c in oldest_first] == ids
    assert _created(platform, dated_code) == [NEXT_DAY, NOON, MIDNIGHT]
    assert _created(platform, dated_code, order="asc") == [MIDNIGHT, NOON, NEXT_DAY]
    for path, params in (("/code", {"project_uuid": project}),
                         ("/coderun", {"code_id": dated_code}), ("/codelog", {"run_id": "x"})):
        bad = requests.get(platform.url(path), params={**params, "order": "sideways"})
        assert bad.status_code == 400 and bad.json()["field"] == "order"


def test_a_runs_logs_are_newest_first_with_order_for_call_order(platform):
    code = create_code(platform, "def Run(engine):\n" + "".join(
        f"    engine.log.info('line {i}')\n" for i in range(23)))
    run = run_now(platform, code["id"])
    newest = requests.get(platform.url("/codelog"), params={"run_id": run["id"]}).json()
    assert newest["total"] == 23 and newest["last_page"] == 2
    second = requests.get(platform.url("/codelog"),
                          params={"run_id": run["id"], "page": 2}).json()
    contents = [e["content"] for e in newest["data"] + second["data"]]
    assert contents == [f"line {i}" for i in reversed(range(23))]
    oldest = requests.get(platform.url("/codelog"),
                          params={"run_id": run["id"], "order": "asc"}).json()
    assert [e["content"] for e in oldest["data"]] == [f"line {i}" for i in range(20)]
    silent = create_code(platform, SOURCE)
    none = requests.get(platform.url("/codelog"),
                        params={"run_id": run_now(platform, silent["id"])["id"]}).json()
    assert none == {"data": [], "total": 0, "page": 1, "last_page": 0}  # as the Go service


# --- request headers reach the code as received -------------------------------------------

HEADER_ECHO = {
    "python": """
import json

def Run(engine):
    engine.result.set({
        "multi": engine.header.get("x-multi"),
        "under": engine.header.get("X_Under_Score"),
        "items": dict(engine.header.items()),
    }, content_type="json")
""",
    "javascript": """
function Run(engine) {
  engine.result.set({
    multi: engine.header.get("x-multi"),
    under: engine.header.get("X_Under_Score"),
    items: engine.header.toObject(),
  }, { contentType: "json" });
}
module.exports = { Run };
""",
    "go": """package main

import "codeactions"

func Run(engine *codeactions.Engine) error {
	return engine.Result.Set(map[string]any{
		"multi": engine.Header.Get("x-multi"),
		"under": engine.Header.Get("X_Under_Score"),
		"items": engine.Header.Items(),
	}, codeactions.WithContentType("json"))
}
""",
}


def _raw_request(platform, path: str, headers: list[tuple[str, str]]):  # noqa: ANN001, ANN202
    """http.client sends each header line as given: repeats and `_` names included."""
    connection = http.client.HTTPConnection("127.0.0.1", int(platform.base_url.rsplit(":", 1)[1]),
                                            timeout=120)
    try:
        connection.putrequest("POST", path)
        for name, value in headers:
            connection.putheader(name, value)
        connection.putheader("Content-Length", "0")
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("language", list(HEADER_ECHO))
def test_repeated_and_underscore_headers_reach_the_code(platform, db, language: str):
    code = create_code(platform, HEADER_ECHO[language], language=language)
    status, content_type, body = _raw_request(platform, f"/action/endpoint/{code['id']}", [
        ("X-Multi", "one"), ("X-Multi", "two"), ("X_Under_Score", "under"),
        ("X-Under-Score", "dash"), ("x-lower", "v"),
        # With `_` names let through, gunicorn would read this as the app's mount point and
        # route the call to /endpoint (text/plain): the platform must never see it.
        ("SCRIPT_NAME", "/action"),
    ])
    assert status == 200, body
    assert content_type == "application/json; charset=UTF-8"
    got = json.loads(body)
    assert got["multi"] == "one" and got["under"] == "under"
    items = got["items"]
    assert items["X-Multi"] == ["one", "two"]
    assert items["X_under_score"] == ["under"] and items["X-Under-Score"] == ["dash"]
    assert items["X-Lower"] == ["v"] and items["Script_name"] == ["/action"]
    with db.session() as session:  # stored as the Go service stored them
        headers = session.scalars(select(CodeRun.headers).where(
            CodeRun.code_id == uuid.UUID(code["id"]))).one()
    assert headers["X-Multi"] == ["one", "two"] and headers["X_under_score"] == ["under"]


# --- health bodies ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/"])
def test_liveness_answers_the_old_body(platform, path: str):
    body = requests.get(platform.url(path), timeout=10).json()
    assert body["status"] == "ok"
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None
    assert isinstance(body["uptime"], int) and body["uptime"] > 0  # nanoseconds, as in Go
    assert body["version"]


def test_health_has_the_old_services_object_beside_ours(platform):
    response = requests.get(platform.url("/health"), timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "healthy"
    assert set(body["services"]) == {"postgres", "redis", "rabbitmq", "s3", "workers", "docker"}
    for service in body["services"].values():
        assert service["status"] == "healthy" and service["latency"] >= 0
    assert body["database"]["status"] == "up"  # ours, unchanged
    assert body["system"]["cpu_count"] >= 1 and body["system"]["memory_usage"].endswith("MB")
    assert isinstance(body["uptime"], int) and body["version"]


def test_health_reports_unhealthy_services_in_the_old_shape(platform):
    from api.app import create_app
    from codeactions.bootstrap import bootstrap

    app = create_app(bootstrap(platform.settings(redis="redis://127.0.0.1:1/0",
                                                 health_check_cache_time=0)))
    try:
        response = app.test_client().get("/health")
    finally:
        app.extensions["codeactions"].db.dispose()
    assert response.status_code == 503
    services = response.get_json()["services"]
    assert services["redis"]["status"] == "unhealthy" and services["redis"]["message"]
    assert services["postgres"]["status"] == "healthy"


# --- the old database settings -----------------------------------------------------------


def _pids(connections) -> set[int]:  # noqa: ANN001
    return {conn.execute(text("SELECT pg_backend_pid()")).scalar() for conn in connections}


def _live(db, pids: set[int]) -> set[int]:  # noqa: ANN001
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                            {"pids": list(pids)})
        return {row.pid for row in rows}


def test_pool_sizes_and_the_wait_for_a_connection(platform, db):
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from shared.db import Database

    pool = Database(platform.settings(
        db_max_pool_size=3, db_min_pool_size=1, postgres_db_timeout=0.5))
    try:
        held = [pool.engine.connect() for _ in range(3)]
        pids = _pids(held)
        assert len(pids) == 3
        with pytest.raises(PoolTimeout):  # a fourth waits POSTGRES_DB_TIMEOUT, then fails
            pool.engine.connect()
        for conn in held:
            conn.close()
        assert len(_live(db, pids)) == 1  # DB_MIN_POOL_SIZE stay open, the rest are closed
    finally:
        pool.dispose()


def test_db_name_names_the_database_when_the_uri_names_none(platform):
    from sqlalchemy.engine import make_url

    from shared.db import Database

    configured = make_url(platform.settings().sqlalchemy_url)
    without_name = configured.set(database="").render_as_string(hide_password=False)
    database = Database(platform.settings(db_uri=without_name, db_name=configured.database))
    try:
        with database.engine.connect() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar() == configured.database
    finally:
        database.dispose()


def test_db_connect_timeout_gives_up_on_a_server_that_never_answers(platform):
    from sqlalchemy.exc import OperationalError

    from shared.db import Database

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never says a word
    port = silent.getsockname()[1]
    database = Database(platform.settings(
        db_uri=f"postgresql://nobody@127.0.0.1:{port}/nothing", db_connect_timeout=1))
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            database.engine.connect()
        except BaseException as exc:  # noqa: BLE001
            outcome.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    try:
        worker.start()
        worker.join(timeout=30)  # without the timeout it would wait for ever
        assert not worker.is_alive()
        assert isinstance(outcome[0], OperationalError)
    finally:
        silent.close()
        database.dispose()


def test_a_run_made_now_is_found_with_an_offset_datetime(platform):
    code = create_code(platform, SOURCE)
    run_now(platform, code["id"])
    brasilia = timezone(timedelta(hours=-3))
    minute_ago = (datetime.now(UTC) - timedelta(minutes=1)).astimezone(brasilia)
    assert len(_created(platform, code["id"], after=minute_ago.isoformat())) == 1
    assert _created(platform, code["id"], before=minute_ago.isoformat()) == []
