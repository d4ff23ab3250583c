"""`/code` over HTTP: create (raw and JSON), list, read, update, delete, and bad input."""

from __future__ import annotations

import uuid

import requests
from sqlalchemy import select

from shared.codes.model import Code
from tests.integration.helpers import PROJECT, create_code

SOURCE = "def Run(engine):\n    engine.result.set('hi')\n"


def test_create_with_raw_source_body_keeps_source_byte_for_byte(platform):
    source = "# comment\n\ndef Run(engine):\n\tengine.result.set('tabs  and  spaces')\n"
    code = create_code(platform, source)
    assert code["source"] == source
    assert code["language"] == "python" and code["type"] == "endpoint"
    assert code["timeout"] == 60
    uuid.UUID(code["id"])


def test_create_with_json_body(platform):
    response = requests.post(
        platform.url("/code"),
        json={"name": "json", "language": "python", "type": "flow",
              "project_uuid": PROJECT, "source": SOURCE, "timeout": 30},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["name"], body["type"], body["source"], body["timeout"]) == (
        "json", "flow", SOURCE, 30)


def test_admin_alias_creates_too(platform):
    response = requests.post(
        platform.url("/admin/code"),
        params={"name": "a", "language": "python", "type": "flow", "project_uuid": PROJECT},
        data=SOURCE, timeout=10,
    )
    assert response.status_code == 201


def test_get_list_filter_by_type(platform):
    project = str(uuid.uuid4())
    flow = create_code(platform, SOURCE, type="flow", project_uuid=project)
    endpoint = create_code(platform, SOURCE, type="endpoint", project_uuid=project)
    everything = requests.get(platform.url("/code"), params={"project_uuid": project}).json()
    assert {c["id"] for c in everything} == {flow["id"], endpoint["id"]}
    flows = requests.get(
        platform.url("/code"), params={"project_uuid": project, "code_type": "flow"}
    ).json()
    assert [c["id"] for c in flows] == [flow["id"]]
    one = requests.get(platform.url(f"/code/{flow['id']}"))
    assert one.status_code == 200 and one.json()["id"] == flow["id"]


def test_list_requires_project_uuid(platform):
    response = requests.get(platform.url("/code"))
    assert response.status_code == 400
    assert "project_uuid" in response.json()["message"]


def test_patch_query_params_and_body(platform, db):
    code = create_code(platform, SOURCE)
    response = requests.patch(
        platform.url(f"/code/{code['id']}"),
        params={"name": "renamed", "timeout": 10, "type": "flow"}, data="", timeout=10,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["name"], body["timeout"], body["type"]) == ("renamed", 10, "flow")
    assert body["source"] == SOURCE  # an empty body keeps the source
    new_source = "def Run(engine):\n    engine.result.set('v2')\n"
    response = requests.patch(platform.url(f"/admin/code/{code['id']}"), data=new_source)
    assert response.status_code == 200 and response.json()["source"] == new_source
    with db.session() as session:
        stored = session.get(Code, uuid.UUID(code["id"]))
        assert stored.source == new_source and stored.name == "renamed"


def test_delete(platform):
    code = create_code(platform, SOURCE)
    assert requests.delete(platform.url(f"/code/{code['id']}")).status_code == 200
    assert requests.get(platform.url(f"/code/{code['id']}")).status_code == 404
    assert requests.delete(platform.url(f"/code/{code['id']}")).status_code == 404


def test_legacy_object_id_lookup(platform, db):
    code = create_code(platform, SOURCE)
    object_id = uuid.uuid4().hex[:24]
    with db.session() as session:
        session.get(Code, uuid.UUID(code["id"])).mongo_object_id = object_id
        session.commit()
    response = requests.get(platform.url(f"/code/{object_id}"))
    assert response.status_code == 200 and response.json()["id"] == code["id"]
    response = requests.get(platform.url(f"/code/{object_id.upper()}"))
    assert response.status_code == 200


def _create(platform, params: dict, data: bytes | str = SOURCE) -> requests.Response:  # noqa: ANN001
    base = {"name": "x", "language": "python", "type": "endpoint", "project_uuid": PROJECT}
    base.update(params)
    base = {k: v for k, v in base.items() if v is not None}
    return requests.post(platform.url("/code"), params=base, data=data, timeout=30)


def _assert_rejected(response: requests.Response, field: str, text: str | None = None) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body.get("field") == field or field in body["message"], body
    if text:
        assert text in body["message"]


def test_bad_inputs_are_rejected_with_the_field_named(platform, db):
    with db.session() as session:
        before = len(session.scalars(select(Code.id)).all())
    _assert_rejected(_create(platform, {"type": "cron"}), "type")
    _assert_rejected(_create(platform, {"language": "ruby"}), "language")
    _assert_rejected(_create(platform, {"project_uuid": None}), "project_uuid")
    _assert_rejected(_create(platform, {"project_uuid": "not-a-uuid"}), "project_uuid")
    _assert_rejected(_create(platform, {"name": "n" * 256}), "name")
    _assert_rejected(_create(platform, {"timeout": 4}), "timeout")
    _assert_rejected(_create(platform, {"timeout": 301}), "timeout")
    _assert_rejected(_create(platform, {"timeout": "soon"}), "timeout")
    _assert_rejected(
        _create(platform, {}, "x = 'forbidden_term_xyz'"), "source",
        "source code contains blacklisted term",
    )
    _assert_rejected(
        _create(platform, {}, b"#" * (1024 * 1024)), "source", "source code is too big"
    )
    with db.session() as session:
        assert len(session.scalars(select(Code.id)).all()) == before  # nothing half-written


def test_limits_at_the_edge_are_accepted(platform):
    assert _create(platform, {"timeout": 5}).status_code == 201
    assert _create(platform, {"timeout": 300}).status_code == 201
    assert _create(platform, {"name": "n" * 255}).status_code == 201
    assert _create(platform, {}, b"#" * (1024 * 1024 - 1)).status_code == 201


def test_malformed_and_unknown_ids(platform):
    assert requests.get(platform.url("/code/not-an-id")).status_code == 400
    assert requests.get(platform.url(f"/code/{uuid.uuid4()}")).status_code == 404
    assert requests.get(platform.url(f"/coderun/{uuid.uuid4()}")).status_code == 404
    assert requests.get(platform.url(f"/codelog/{uuid.uuid4()}")).status_code == 404
    assert requests.get(platform.url("/coderun/xyz")).status_code == 400


def test_health_docs_and_openapi(platform):
    assert requests.get(platform.url("/")).status_code == 200
    assert requests.get(platform.url("/healthz")).json()["status"] == "ok"
    health = requests.get(platform.url("/health"))
    assert health.status_code == 200, health.text
    body = health.json()
    for dependency in ("database", "redis", "broker", "s3"):
        assert body[dependency]["status"] == "up"
        assert body[dependency]["latency_ms"] >= 0
    spec = requests.get(platform.url("/openapi.json")).json()
    assert "/code" in spec["paths"] and "/action/endpoint/{code_id}" in spec["paths"]
    from openapi_spec_validator import validate

    validate(spec)  # raises on any departure from the OpenAPI 3.0 schema
    assert requests.get(platform.url("/docs")).status_code == 200


def test_compat_defaults_to_strict_and_is_settable_on_create_and_patch(platform):
    code = create_code(platform, SOURCE)
    assert code["compat"] == "strict"
    legacy = create_code(platform, SOURCE, compat="legacy")
    assert legacy["compat"] == "legacy"
    patched = requests.patch(
        platform.url(f"/code/{legacy['id']}"), params={"compat": "strict"}, timeout=10
    )
    assert patched.status_code == 200 and patched.json()["compat"] == "strict"
    bad = requests.patch(platform.url(f"/code/{code['id']}"), params={"compat": "loose"})
    assert bad.status_code == 400 and bad.json()["field"] == "compat"
    assert requests.get(platform.url(f"/code/{code['id']}")).json()["compat"] == "strict"


def test_mode_is_shown_settable_and_warm_stays_its_alias(platform):
    """`mode` = pool | warm | resident on create and PATCH, in the code's JSON; `warm=true`
    still works (mode warm) and `warm` shows whether the code is bound to its containers."""
    code = create_code(platform, SOURCE)
    assert (code["mode"], code["warm"]) == ("pool", False)  # the default (DEFAULT_MODE)
    assert create_code(platform, SOURCE, warm=True)["mode"] == "warm"
    resident = requests.post(platform.url("/code"), json={
        "name": "resident", "language": "python", "type": "endpoint", "project_uuid": PROJECT,
        "source": SOURCE, "mode": "resident"})
    assert resident.status_code == 201, resident.text
    assert (resident.json()["mode"], resident.json()["warm"]) == ("resident", True)
    url = platform.url(f"/code/{resident.json()['id']}")
    # warm=true keeps a resident code resident; warm=false is mode pool.
    assert requests.patch(url, params={"warm": "true"}).json()["mode"] == "resident"
    assert requests.patch(url, json={"warm": False}).json()["mode"] == "pool"
    patched = requests.patch(url, params={"mode": "warm"})
    assert patched.status_code == 200 and (patched.json()["mode"], patched.json()["warm"]) == (
        "warm", True)
    assert requests.get(url).json()["mode"] == "warm"
    for params, field in (({"mode": "forever"}, "mode"),
                          ({"mode": "pool", "warm": "true"}, "warm")):
        refused = requests.patch(url, params=params)
        assert refused.status_code == 400 and refused.json()["field"] == field, refused.text
    assert requests.get(url).json()["mode"] == "warm"
