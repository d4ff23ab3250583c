"""Requests no well-behaved client sends, over real HTTP (a raw socket where a client library
would refuse to send them): each gets a 4xx with a JSON `message` (and the `field` to
blame), nothing is half-written, and no connection is held past the read timeout."""

from __future__ import annotations

import json
import socket
import time
import uuid

import pytest
import requests

from tests.conftest import TEST_API_PORT, TEST_READ_TIMEOUT
from tests.integration.helpers import create_code

SOURCE = "def Run(engine):\n    engine.result.set('hi')\n"


def _raw(request: bytes, *, then: bytes | None = None, pause: float = 0.0) -> tuple[int, dict]:
    """Send `request` as bytes (and `then` after `pause` s); the status and JSON body."""
    with socket.create_connection(("127.0.0.1", TEST_API_PORT),
                                  timeout=TEST_READ_TIMEOUT + 30) as sock:
        sock.sendall(request)
        if then is not None:
            time.sleep(pause)
            sock.sendall(then)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
            if _complete(received):
                break
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    assert headers.get("content-type", "").startswith("application/json"), received[:500]
    return int(status_line.split()[1]), json.loads(body)


def _complete(received: bytes) -> bool:
    head, sep, body = received.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def _project() -> str:
    return str(uuid.uuid4())


def _codes_of(platform, project: str) -> list:  # noqa: ANN001
    return requests.get(platform.url("/code"), params={"project_uuid": project}).json()


# --- what gunicorn itself refuses: JSON like every other error ------------------------


def test_a_body_shorter_than_its_content_length_gets_a_408_at_the_read_timeout(platform):
    project = _project()
    request = (f"POST /code?language=python&type=endpoint&project_uuid={project} HTTP/1.1\r\n"
               "Host: x\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n"
               "def Run(engine):").encode()
    status, body = _raw(request)
    assert status == 408 and "not received in time" in body["message"]
    assert _codes_of(platform, project) == []


def test_headers_trickled_past_the_read_timeout_get_a_408(platform):
    status, body = _raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n", then=b"X-Slow: 1\r\n",
                        pause=TEST_READ_TIMEOUT + 1)
    assert status == 408 and body["message"]


def test_a_long_request_line_gets_a_json_414(platform):
    status, body = _raw(b"GET /healthz?q=" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 414 and body["message"]


def test_large_headers_get_a_json_431(platform):
    status, body = _raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000
                        + b"\r\n\r\n")
    assert status == 431 and body["message"]


def test_a_path_that_is_not_utf8_gets_a_json_400(platform):
    status, body = _raw(b"GET /code/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status in (400, 404) and body["message"]


def test_a_malformed_chunked_body_gets_a_json_400_and_nothing_stored(platform):
    project = _project()
    request = (f"POST /code?language=python&type=endpoint&project_uuid={project} HTTP/1.1\r\n"
               "Host: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n").encode()
    status, body = _raw(request)
    assert status == 400 and body["message"]
    assert _codes_of(platform, project) == []


# --- the API's own answers ------------------------------------------------------------


def test_a_405_says_what_the_path_takes_and_options_agrees(platform):
    refused = requests.put(platform.url("/coderun/batch"))
    assert refused.status_code == 405 and refused.json()["message"]
    assert set(refused.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}
    options = requests.options(platform.url("/coderun/batch"))
    assert options.status_code == 204
    assert set(options.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}
    run_path = requests.options(platform.url(f"/coderun/{uuid.uuid4()}"))
    assert {"GET", "OPTIONS"} <= set(run_path.headers["Allow"].split(", "))


@pytest.mark.parametrize("field", ["name", "source", "url"])
def test_a_nul_in_a_code_field_is_a_400_naming_it(platform, field):
    project = _project()
    code = {"name": "n", "language": "python", "type": "endpoint", "project_uuid": project,
            "source": SOURCE, field: "a\u0000b"}
    response = requests.post(platform.url("/code"), json=code)
    assert response.status_code == 400 and response.json()["field"] == field
    assert _codes_of(platform, project) == []


def test_a_nul_sent_to_an_endpoint_is_a_400_naming_where(platform):
    code = create_code(platform, SOURCE)
    url = platform.url(f"/action/endpoint/{code['id']}")
    value = requests.get(url, params={"q": "a\u0000"})
    assert value.status_code == 400 and value.json()["field"] == "q"
    key = requests.get(url, params={"a\u0000": "1"})
    assert key.status_code == 400 and key.json()["field"] == "query"
    body = requests.post(url, data="x\u0000y".encode())
    assert body.status_code == 400 and body.json()["field"] == "body"
    runs = requests.get(platform.url("/coderun"), params={"code_id": code["id"]}).json()
    assert runs == []


def test_a_nul_in_an_async_run_is_a_400_naming_the_field(platform):
    code = create_code(platform, SOURCE)
    for item, field in (
        ({"params": {"a": "\u0000"}}, "params.a"),
        ({"body": "\u0000"}, "body"),
        ({"headers": {"X-A": "\u0000"}}, "headers.X-A"),
    ):
        response = requests.post(platform.url("/coderun"), json={"code_id": code["id"], **item})
        assert response.status_code == 400 and response.json()["field"] == field, item
    batch = requests.post(platform.url("/coderun/batch"), json={"runs": [
        {"code_id": code["id"]}, {"code_id": code["id"], "body": "\u0000"}]})
    assert batch.status_code == 400 and batch.json()["field"] == "runs.1.body"
    assert requests.get(platform.url("/coderun"), params={"code_id": code["id"]}).json() == []


def test_a_huge_page_is_a_400_naming_page(platform):
    code = create_code(platform, SOURCE)
    huge = str(10**20)
    for path, params in (("/coderun", {"code_id": code["id"]}),
                         ("/codelog", {"code_id": code["id"]}),
                         ("/codelog", {"run_id": str(uuid.uuid4())})):
        response = requests.get(platform.url(path), params={**params, "page": huge})
        assert response.status_code == 400 and response.json()["field"] == "page", path


@pytest.mark.parametrize(("change", "field"), [
    ({"name": 123}, "name"),
    ({"url": 123}, "url"),
    ({"timeout": 1e999}, "timeout"),  # json.dumps writes Infinity
    ({"source": 5}, "source"),
])
def test_json_fields_of_the_wrong_type_are_a_400_naming_them(platform, change, field):
    project = _project()
    code = {"language": "python", "type": "endpoint", "project_uuid": project,
            "source": SOURCE, **change}
    created = requests.post(platform.url("/code"), data=json.dumps(code),
                            headers={"Content-Type": "application/json"})
    assert created.status_code == 400 and created.json()["field"] == field
    stored = create_code(platform, SOURCE, project_uuid=project)
    patched = requests.patch(platform.url(f"/code/{stored['id']}"), data=json.dumps(change),
                             headers={"Content-Type": "application/json"})
    assert patched.status_code == 400 and patched.json()["field"] == field


def test_deeply_nested_json_is_a_400(platform):
    deep = "[" * 100_000 + "]" * 100_000
    code = requests.post(platform.url("/code"), data='{"source": ' + deep + "}",
                         headers={"Content-Type": "application/json"})
    assert code.status_code == 400 and code.json()["message"]
    run = requests.post(platform.url("/coderun"), data='{"code_id": ' + deep + "}",
                        headers={"Content-Type": "application/json"})
    assert run.status_code == 400 and run.json()["message"]


def test_ids_that_are_neither_uuid_nor_object_id_are_a_400(platform):
    for path in ("/code/xyz", "/coderun/xyz", "/codelog/xyz", "/action/endpoint/xyz"):
        response = requests.get(platform.url(path))
        assert response.status_code == 400 and response.json()["message"], path


def test_one_kept_alive_connection_serves_request_after_request(platform):
    # The read deadline wraps a connection's socket once, not once per request: a client
    # that keeps its connection (as Schemathesis, or any pooled client, does) is still
    # served past a thousand requests.
    with requests.Session() as session:
        statuses = {session.get(platform.url("/healthz"), timeout=10).status_code
                    for _ in range(1200)}
    assert statuses == {200}
