"""Project and permission events through the real RabbitMQ: `codeactions events` applies
them to PostgreSQL, and the result is read back through the API with authorization on."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from api.app import create_app
from shared.access.permission import UserPermission
from shared.access.project import Project
from tests.integration.event_broker import ConsumerProcess, Publisher, eventually
from tests.integration.identity_provider import REALM, IdentityProvider

SOURCE = "def Run(engine):\n    engine.result.set('ok')\n"
MAX_ATTEMPTS = 3


@pytest.fixture(scope="module")
def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {
        "project_exchange": f"projects.topic.{tag}",
        "project_queue": f"code-actions.projects.{tag}",
        "permission_exchange": f"permissions.topic.{tag}",
        "permission_queue": f"code-actions-permissions.{tag}",
    }


@pytest.fixture(scope="module")
def consumer(platform, names, tmp_path_factory) -> Iterator[ConsumerProcess]:  # noqa: ANN001
    env = {
        **platform.env,
        "FLOWS_CODE_ACTIONS_PROJECT_EXCHANGE": names["project_exchange"],
        "FLOWS_CODE_ACTIONS_PROJECT_QUEUE": names["project_queue"],
        "FLOWS_CODE_ACTIONS_PERMISSION_EXCHANGE": names["permission_exchange"],
        "FLOW_CODE_ACTIONS_PERMISSION_QUEUE": names["permission_queue"],  # the seed's spelling
        "FLOWS_CODE_ACTIONS_EVENTS_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    }
    process = ConsumerProcess(env, tmp_path_factory.mktemp("events") / "consumer.log")
    publisher = Publisher(platform.urls["rabbitmq"])
    try:
        eventually(lambda: publisher.consumers(names["project_queue"])
                   and publisher.consumers(names["permission_queue"]), timeout=60)
    finally:
        publisher.close()
    yield process
    assert process.stop() == 0, process.output()


@pytest.fixture()
def broker(platform, consumer) -> Iterator[Publisher]:  # noqa: ANN001
    publisher = Publisher(platform.urls["rabbitmq"])
    yield publisher
    publisher.close()


@pytest.fixture(scope="module")
def api(platform, idp):  # noqa: ANN001, ANN201
    app = create_app(platform.settings(oidc_auth_enabled=True, oidc_host=idp.url,
                                       oidc_realm=REALM))
    yield app.test_client()
    app.extensions["codeactions"].db.dispose()


class Person:
    """Someone the identity provider knows, asking the API."""

    def __init__(self, idp: IdentityProvider, api, email: str) -> None:  # noqa: ANN001
        self.email = email
        self.api = api
        self.headers = {"Authorization": f"Bearer {idp.add(uuid.uuid4().hex, email=email)}"}

    def reads(self, project: str) -> int:
        return self.api.get(f"/code?project_uuid={project}", headers=self.headers).status_code

    def creates(self, project: str) -> int:
        params = {"name": "evt", "language": "python", "type": "flow", "project_uuid": project}
        return self.api.post("/code", query_string=params, data=SOURCE,
                             headers=self.headers).status_code


def person(idp, api) -> Person:  # noqa: ANN001
    return Person(idp, api, f"user.{uuid.uuid4().hex[:10]}@example.com")


def permissions(db, project: str) -> dict[str, tuple]:  # noqa: ANN001
    with db.session() as session:
        rows = session.scalars(select(UserPermission).where(
            UserPermission.project_uuid == uuid.UUID(project)))
        return {row.email: (row.id, row.role, row.updated_at) for row in rows}


def test_a_project_event_creates_the_project_and_its_people(broker, names, idp, api, db):  # noqa: ANN001
    project = str(uuid.uuid4())
    owner, viewer, stranger = person(idp, api), person(idp, api), person(idp, api)
    event = {  # the seed's shape, with fields we ignore
        "uuid": project, "name": "Acme bots", "is_template": False, "date_format": "D",
        "timezone": "America/Sao_Paulo", "organization_id": 7, "extra_fields": {},
        "authorizations": [{"user_email": owner.email.upper(), "role": 3},
                           {"user_email": viewer.email, "role": 1}],
        "description": "", "organization_uuid": str(uuid.uuid4()), "brain_on": False,
    }
    assert owner.creates(project) == 403  # before the event
    broker.publish(names["project_exchange"], event, routing_key="project.created")
    eventually(lambda: owner.creates(project) == 201)
    assert viewer.reads(project) == 200
    assert viewer.creates(project) == 403
    assert stranger.reads(project) == 403
    with db.session() as session:
        stored = session.scalar(select(Project).where(Project.uuid == uuid.UUID(project)))
    assert stored.name == "Acme bots"
    assert {a["user_email"] for a in stored.authorizations} == {owner.email, viewer.email}


def test_permission_events_create_update_and_delete(broker, names, idp, api):  # noqa: ANN001
    project = str(uuid.uuid4())
    user = person(idp, api)
    exchange = names["permission_exchange"]

    def event(action: str, role: int | None = None) -> dict:
        body = {"action": action, "project": project, "user": user.email}
        return body if role is None else {**body, "role": role}

    broker.publish(exchange, event("create", 1))
    eventually(lambda: user.reads(project) == 200)
    assert user.creates(project) == 403
    broker.publish(exchange, event("update", 3))
    eventually(lambda: user.creates(project) == 201)
    broker.publish(exchange, event("delete"))
    eventually(lambda: user.reads(project) == 403)
    # `update` of someone without a role creates it, as the seed did.
    broker.publish(exchange, event("update", 2))
    eventually(lambda: user.reads(project) == 200)
    assert user.creates(project) == 403


def test_the_same_event_twice_changes_nothing(broker, names, idp, api, db):  # noqa: ANN001
    project = str(uuid.uuid4())
    user, marker = person(idp, api), person(idp, api)
    grant = {"action": "create", "project": project, "user": user.email, "role": 3}
    project_event = {"uuid": project, "name": "twice",
                     "authorizations": [{"user_email": user.email, "role": 3}]}
    broker.publish(names["project_exchange"], project_event)
    broker.publish(names["permission_exchange"], grant)
    eventually(lambda: user.creates(project) == 201)
    eventually(lambda: permissions(db, project))
    first = permissions(db, project)
    with db.session() as session:
        project_row = session.scalar(select(Project).where(Project.uuid == uuid.UUID(project)))

    broker.publish(names["project_exchange"], project_event)
    broker.publish(names["permission_exchange"], grant)
    broker.publish(names["permission_exchange"], grant)
    # Events on one queue apply in order: once the marker shows, the duplicates were handled.
    broker.publish(names["permission_exchange"],
                   {"action": "create", "project": project, "user": marker.email, "role": 1})
    eventually(lambda: marker.reads(project) == 200)
    after = permissions(db, project)
    assert after[user.email] == first[user.email]  # same row, same role, never rewritten
    assert len(after) == 2
    with db.session() as session:
        rows = list(session.scalars(select(Project).where(Project.uuid == uuid.UUID(project))))
    assert [(r.id, r.updated_at) for r in rows] == [(project_row.id, project_row.updated_at)]


def test_malformed_messages_are_dead_lettered_and_do_not_block(broker, names, idp, api):  # noqa: ANN001
    project = str(uuid.uuid4())
    marker = person(idp, api)
    queue = names["permission_queue"]
    bad = [
        (b'{"action": "create", "project": ', "invalid JSON"),
        (b"\xff\xfe not even text", "invalid JSON"),
        (b'["a", "list"]', "JSON object"),
        (b'{"action": "promote", "project": "%s", "user": "a@b.c", "role": 3}'
         % project.encode(), "action"),
        (b'{"action": "create", "project": "%s", "role": 3}' % project.encode(), "user"),
        (b'{"action": "create", "project": "not-a-uuid", "user": "a@b.c", "role": 3}',
         "project"),
        (b'{"action": "create", "project": "%s", "user": "a@b.c"}' % project.encode(), "role"),
        (b'{"action": "create", "project": "%s", "user": "a@b.c", "role": "3"}'
         % project.encode(), "role"),
    ]
    for body, _ in bad:
        broker.publish(names["permission_exchange"], body)
    broker.publish(names["project_exchange"], {"name": "no uuid", "authorizations": []})
    broker.publish(names["permission_exchange"],
                   {"action": "create", "project": project, "user": marker.email, "role": 1})
    eventually(lambda: marker.reads(project) == 200)

    dead = eventually(lambda: broker.drain(queue + ".dead-letter"))
    assert [body for _, body in dead] == [body for body, _ in bad]
    for (headers, _), (_, reason) in zip(dead, bad, strict=True):
        assert reason in headers["x-codeactions-error"], headers
        assert headers["x-codeactions-queue"] == queue
        assert headers["x-codeactions-attempts"] == 1  # never retried: it cannot succeed
    (project_dead,) = eventually(lambda: broker.drain(names["project_queue"] + ".dead-letter"))
    assert "uuid" in project_dead[0]["x-codeactions-error"]


def test_an_event_that_keeps_failing_is_dead_lettered_after_its_attempts(
    broker, names, idp, api, db  # noqa: ANN001
):
    project = str(uuid.uuid4())
    marker = person(idp, api)
    # Valid in shape, but PostgreSQL refuses text with a NUL byte: it fails on every attempt.
    poison = {"action": "create", "project": project, "user": "nul\u0000@example.com", "role": 1}
    broker.publish(names["permission_exchange"], poison)
    broker.publish(names["permission_exchange"],
                   {"action": "create", "project": project, "user": marker.email, "role": 1})
    eventually(lambda: marker.reads(project) == 200)
    (dead,) = eventually(lambda: broker.drain(names["permission_queue"] + ".dead-letter"))
    headers, body = dead
    assert headers["x-codeactions-attempts"] == MAX_ATTEMPTS
    assert "NUL" in headers["x-codeactions-error"] or "0x00" in headers["x-codeactions-error"]
    assert body.decode() == __import__("json").dumps(poison)
    assert list(permissions(db, project)) == [marker.email]
