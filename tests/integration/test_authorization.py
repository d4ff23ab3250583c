"""OIDC authorization of the management routes, against a Keycloak-compatible user-info
endpoint on loopback and the real API code (in-process), PostgreSQL and Redis."""

from __future__ import annotations

import threading
import uuid

import pytest

from api.app import create_app
from shared.access.permission_sync import apply_permission_event
from tests.integration.identity_provider import REALM

SOURCE = "def Run(engine):\n    engine.log.info('hi')\n    engine.result.set('ok')\n"
ROLES = ("viewer", "contributor", "moderator", "norole", "service")
READ_STATUSES = {"viewer": 200, "contributor": 200, "moderator": 200, "norole": 403,
                 "service": 200}


@pytest.fixture(scope="module")
def apps(platform, idp):  # noqa: ANN001, ANN201
    made = []

    def _make(**overrides: object):  # noqa: ANN202
        settings = dict(oidc_auth_enabled=True, oidc_host=idp.url, oidc_realm=REALM)
        app = create_app(platform.settings(**{**settings, **overrides}))
        made.append(app)
        return app.test_client()

    yield _make
    for app in made:
        app.extensions["codeactions"].db.dispose()


@pytest.fixture(scope="module")
def world(idp, db, apps) -> dict:  # noqa: ANN001
    """A project with one user per role, a code, a finished run and its log."""
    project, other = str(uuid.uuid4()), str(uuid.uuid4())
    tag = uuid.uuid4().hex[:8]
    tokens = {role: idp.add(f"{role}-{tag}", email=f"{role}.{tag}@Example.com")
              for role in ROLES[:4]}
    tokens["service"] = idp.add(f"service-{tag}", email="flows@weni.ai",
                                can_communicate_internally=True)
    tokens["rejected"] = f"rejected-{tag}"
    for role_name, role in (("viewer", 1), ("contributor", 2), ("moderator", 3)):
        apply_permission_event(db, {"action": "create", "project": project,
                                    "user": f"{role_name}.{tag}@example.com", "role": role})
    # The stranger is a moderator elsewhere, not on `project`.
    apply_permission_event(db, {"action": "create", "project": other,
                                "user": f"norole.{tag}@example.com", "role": 3})
    client = apps()
    moderator = bearer(tokens["moderator"])
    code = client.post("/code", query_string=code_params(project), data=SOURCE,
                       headers=moderator)
    assert code.status_code == 201, code.get_json()
    code_id = code.get_json()["id"]
    run = client.post("/coderun", json={"code_id": code_id}, headers=moderator).get_json()
    run = client.get(f"/coderun/{run['id']}?wait=60", headers=moderator).get_json()
    assert run["status"] == "completed", run
    logs = client.get(f"/codelog?run_id={run['id']}", headers=moderator).get_json()
    return {"project": project, "other": other, "tokens": tokens, "code": code_id,
            "run": run["id"], "log": logs["data"][0]["id"]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def code_params(project: str, kind: str = "endpoint") -> dict[str, str]:
    return {"name": f"auth-{uuid.uuid4().hex[:6]}", "language": "python", "type": kind,
            "project_uuid": project}


def test_management_routes_need_a_token_the_provider_accepts(apps, world):  # noqa: ANN001
    client = apps()
    missing = client.get(f"/code?project_uuid={world['project']}")
    assert missing.status_code == 401
    assert missing.get_json()["field"] == "Authorization"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    rejected = client.get(f"/code/{world['code']}", headers=bearer(world["tokens"]["rejected"]))
    assert rejected.status_code == 401
    assert "rejected" in rejected.get_json()["message"]
    for path in ("/codelib", f"/coderun/{world['run']}", f"/codelog/{world['log']}",
                 f"/admin/code/{world['code']}"):
        assert client.get(path).status_code == 401, path
    # Any accepted token may read the library catalog: it belongs to no project.
    assert client.get("/codelib", headers=bearer(world["tokens"]["norole"])).status_code == 200


def test_a_bare_token_is_accepted(apps, world):  # noqa: ANN001
    client = apps()
    token = world["tokens"]["viewer"]
    assert client.get(f"/code/{world['code']}",
                      headers={"Authorization": token}).status_code == 200


def test_public_routes_stay_open(apps, world):  # noqa: ANN001
    client = apps()
    assert client.post(f"/action/endpoint/{world['code']}").get_data(as_text=True) == "ok"
    assert client.get(f"/endpoint/{world['code']}").status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/openapi.json").status_code == 200


WRITE_STATUS = {"viewer": 403, "contributor": 403, "norole": 403}


@pytest.mark.parametrize(
    ("method", "path", "body", "allowed"),
    [
        ("GET", "/code?project_uuid={project}", None, 200),
        ("GET", "/code/{code}", None, 200),
        ("GET", "/admin/code/{code}", None, 200),
        ("GET", "/coderun/{run}", None, 200),
        ("GET", "/coderun?code_id={code}", None, 200),
        ("GET", "/codelog/{log}", None, 200),
        ("GET", "/codelog?run_id={run}", None, 200),
        ("GET", "/codelog?code_id={code}", None, 200),
        ("PATCH", "/code/{code}?timeout=30", None, 200),
        ("PATCH", "/admin/code/{code}?timeout=31", None, 200),
        ("POST", "/code?name=made&language=python&type=flow&project_uuid={project}",
         SOURCE, 201),
        ("POST", "/admin/code?name=made&language=python&type=flow&project_uuid={project}",
         SOURCE, 201),
        ("POST", "/coderun", {"code_id": "{code}"}, 202),
        ("POST", "/coderun/batch", {"runs": [{"code_id": "{code}"}]}, 202),
        ("POST", "/coderun/{run}/cancel", None, 409),  # allowed, but the run had ended
    ],
)
def test_each_route_needs_its_role(apps, world, method, path, body, allowed):  # noqa: ANN001
    client = apps()
    reading = method == "GET"
    url = path.format(**world)
    kwargs = {}
    if isinstance(body, dict):
        kwargs["json"] = _fill(body, world)
    elif body is not None:
        kwargs["data"] = body
    got = {}
    for role in ROLES:
        response = client.open(url, method=method, headers=bearer(world["tokens"][role]),
                               **kwargs)
        got[role] = response.status_code
    expected = {role: allowed for role in ROLES}
    expected.update({"norole": 403} if reading else WRITE_STATUS)
    assert got == expected


def _fill(body: dict, world: dict) -> dict:
    def fill(value):  # noqa: ANN001, ANN202
        if isinstance(value, str):
            return value.format(**world)
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    return fill(body)


def test_deleting_needs_a_moderator(apps, world, db):  # noqa: ANN001
    from shared.codes.model import Code

    client = apps()
    tokens = world["tokens"]
    for deleter in ("moderator", "service"):
        victim = client.post("/code", query_string=code_params(world["project"]), data=SOURCE,
                             headers=bearer(tokens["moderator"])).get_json()["id"]
        for role in ("viewer", "contributor", "norole"):
            refused = client.delete(f"/code/{victim}", headers=bearer(tokens[role]))
            assert refused.status_code == 403, role
        with db.session() as session:
            assert session.get(Code, uuid.UUID(victim)) is not None
        assert client.delete(f"/code/{victim}", headers=bearer(tokens[deleter])).status_code == 204
        with db.session() as session:
            assert session.get(Code, uuid.UUID(victim)) is None


def test_lists_only_show_the_callers_projects(apps, world, db):  # noqa: ANN001
    from sqlalchemy import func, select

    from shared.codes.model import Code

    client = apps()
    stranger = bearer(world["tokens"]["norole"])
    own = client.post("/code", query_string=code_params(world["other"]), data=SOURCE,
                      headers=stranger)
    assert own.status_code == 201
    listed = client.get(f"/code?project_uuid={world['other']}", headers=stranger).get_json()
    assert [c["id"] for c in listed] == [own.get_json()["id"]]
    assert client.get(f"/code?project_uuid={world['project']}",
                      headers=stranger).status_code == 403
    with db.session() as session:
        before = session.scalar(select(func.count()).select_from(Code))
    refused = client.post("/code", query_string=code_params(world["project"]), data=SOURCE,
                          headers=stranger)
    assert refused.status_code == 403
    assert refused.get_json()["field"] == "project_uuid"
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Code)) == before


def test_a_burst_with_one_token_costs_one_provider_call(apps, world, idp):  # noqa: ANN001
    client = apps()
    token = idp.add(f"burst-{uuid.uuid4().hex}", email="x@y.z", can_communicate_internally=True)
    statuses = []

    def call() -> None:
        statuses.append(apps().get(f"/code/{world['code']}", headers=bearer(token)).status_code)

    threads = [threading.Thread(target=call) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for _ in range(5):
        call()
    assert statuses == [200] * 17
    assert idp.calls[token] == 1

    rejected = f"nobody-{uuid.uuid4().hex}"
    for _ in range(4):
        assert client.get("/codelib", headers=bearer(rejected)).status_code == 401
    assert idp.calls[rejected] == 1


def test_the_cache_expires(apps, world, idp):  # noqa: ANN001
    import time

    client = apps(oidc_cache_seconds=1)
    token = idp.add(f"short-{uuid.uuid4().hex}", email="x@y.z", can_communicate_internally=True)
    assert client.get("/codelib", headers=bearer(token)).status_code == 200
    assert client.get("/codelib", headers=bearer(token)).status_code == 200
    assert idp.calls[token] == 1
    time.sleep(1.5)
    assert client.get("/codelib", headers=bearer(token)).status_code == 200
    assert idp.calls[token] == 2


def test_an_identity_provider_that_is_down_is_503_never_open(apps, world, idp):  # noqa: ANN001
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    unreachable = apps(oidc_host=f"http://127.0.0.1:{closed}", oidc_timeout=2)
    response = unreachable.get(f"/code/{world['code']}", headers=bearer(f"t-{uuid.uuid4()}"))
    assert response.status_code == 503
    assert "identity provider" in response.get_json()["message"]
    assert int(response.headers["Retry-After"]) >= 1

    client = apps()
    cached = idp.add(f"cached-{uuid.uuid4().hex}", email="x@y.z",
                     can_communicate_internally=True)
    assert client.get("/codelib", headers=bearer(cached)).status_code == 200
    fresh = idp.add(f"fresh-{uuid.uuid4().hex}", email="x@y.z", can_communicate_internally=True)
    idp.failing = True
    try:
        failed = client.get(f"/code/{world['code']}", headers=bearer(fresh))
        assert failed.status_code == 503
        assert client.get("/codelib", headers=bearer(cached)).status_code == 200  # cached
    finally:
        idp.failing = False
    assert client.get("/codelib", headers=bearer(fresh)).status_code == 200


def test_every_management_route_refuses_a_stranger(apps, world):  # noqa: ANN001
    """Walks the app's routes, so a route added later without a project check fails here."""
    from api.authorization import is_management_path

    client = apps()
    ids = {"code_id": world["code"], "run_id": world["run"], "log_id": world["log"]}
    query = f"?project_uuid={world['project']}&code_id={world['code']}&run_id={world['run']}"
    one = {"code_id": world["code"]}
    app = client.application
    checked = 0
    for rule in app.url_map.iter_rules():
        if not is_management_path(rule.rule):
            continue
        unknown = set(rule.arguments) - set(ids)
        assert not unknown, f"{rule.rule}: teach this test what {unknown} is"
        path = rule.rule
        for name in rule.arguments:
            path = path.replace(f"<{name}>", ids[name])
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for token, expected in ((world["tokens"]["rejected"], 401),
                                    (world["tokens"]["norole"], 403)):
                if rule.rule == "/codelib" and expected == 403:
                    expected = 200  # not a project's: any accepted token
                body = {"runs": [one]} if rule.rule.endswith("/batch") else one
                response = client.open(path + query, method=method, json=body,
                                       headers=bearer(token))
                assert response.status_code == expected, (method, rule.rule, token)
                checked += 1
    assert checked >= 30
