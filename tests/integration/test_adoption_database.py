"""Upgrading in place: `codeactions migrate` on a database the Go service built and filled
(tests/integration/legacy_go_service.py), then the API reads every row back over HTTP."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime

import pytest
import requests
from sqlalchemy import create_engine, text

from shared.adoption.legacy_values import project_uuid_for
from tests.conftest import REPO_ROOT, Platform
from tests.integration import legacy_go_service as legacy
from tests.integration.identity_provider import REALM

codeactions, env_for = legacy.run_cli, legacy.env_for


class Adopted:
    def __init__(self, url: str, world: legacy.LegacyWorld, migrate_output: str) -> None:
        self.url = url
        self.world = world
        self.migrate_output = migrate_output
        self.api = ""
        self.reader = ""

    def get(self, path: str, **params: object) -> requests.Response:
        return requests.get(self.api + path, params=params, timeout=10)


@pytest.fixture(scope="module")
def adopted(platform: Platform) -> Iterator[Adopted]:
    """The old database, its dry run checked to change nothing, then migrated, and an API
    process of ours serving it."""
    base = platform.settings().sqlalchemy_url
    name = f"adopt_{uuid.uuid4().hex[:8]}"
    url = legacy.create_database(base, name)
    legacy.build_old_schema(url)
    world = legacy.fill(url)
    env = env_for(platform, url)
    reader = f"reader_{name}"  # an operator's reporting role, granted on the old tables
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(f'CREATE ROLE "{reader}"'))
        connection.execute(text(f'GRANT SELECT ON codes, coderuns TO "{reader}"'))
    engine.dispose()

    before = legacy.snapshot(url)
    dry = codeactions(env, "migrate", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "orphan runs (their code was deleted): 2" in dry.stdout
    assert "'legacy-project-7' -> " + str(project_uuid_for(legacy.LEGACY_PROJECT)[0]) \
        in dry.stdout
    assert "Dry run: nothing was changed." in dry.stdout
    assert legacy.snapshot(url) == before

    migrated = codeactions(env, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    state = Adopted(url, world, migrated.stdout)
    state.reader = reader
    try:
        with legacy.serve_api(platform, url) as api:
            state.api = api
            yield state
    finally:
        legacy.drop_database(base, name)
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP ROLE IF EXISTS "{reader}"'))
        admin.dispose()


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_codes_read_back_by_uuid_and_by_object_id(adopted: Adopted):
    for code in adopted.world.codes.values():
        keys = [code.id] + ([code.mongo_object_id] if code.mongo_object_id else [])
        for key in keys:
            answer = adopted.get(f"/code/{key}")
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["id"] == code.id
            expected = code.mongo_object_id.lower() if code.mongo_object_id else None
            assert body["mongo_object_id"] == expected
            assert (body["name"], body["type"], body["language"], body["source"]) == (
                code.name, code.type, code.language, code.source)
            assert (body["timeout"], body["url"]) == (code.timeout, code.url)
            assert at(body["created_at"]) == code.created_at
            assert body["project_uuid"] == str(project_uuid_for(code.project_uuid)[0])
            assert body["compat"] == "legacy"


def test_a_project_lists_its_codes_by_uuid_and_by_its_old_text_id(adopted: Adopted):
    world = adopted.world
    listed = adopted.get("/code", project_uuid=world.project).json()
    # The upper-case spelling of the same UUID is the same project now.
    assert {c["id"] for c in listed} == {world.codes["migrated"].id, world.codes["upper"].id}
    old = adopted.get("/code", project_uuid=legacy.LEGACY_PROJECT)
    assert old.status_code == 200, old.text
    assert [c["id"] for c in old.json()] == [world.codes["plain"].id]
    unknown = adopted.get("/code", project_uuid="never-seen-project")
    assert unknown.status_code == 400 and unknown.json()["field"] == "project_uuid"
    with create_engine(adopted.url).connect() as connection:
        recorded = connection.execute(text(
            "SELECT original, uuid FROM legacy_project_ids")).all()
    assert recorded == [(legacy.LEGACY_PROJECT, project_uuid_for(legacy.LEGACY_PROJECT)[0])]


def test_runs_read_back_with_every_field(adopted: Adopted):
    world = adopted.world
    run = world.runs["by_object_id"]
    for key in (run.id, run.mongo_object_id):
        body = adopted.get(f"/coderun/{key}").json()
        assert body["id"] == run.id and body["mongo_object_id"] == run.mongo_object_id
        assert (body["code_id"], body["code_mongo_id"]) == (run.code_id, run.code_mongo_id)
        assert (body["status"], body["result"], body["body"]) == ("completed", run.result,
                                                                  run.body)
        assert (body["extra"], body["params"], body["headers"]) == (run.extra, run.params,
                                                                    run.headers)
        assert at(body["created_at"]) == run.created_at
        assert at(body["started_at"]) == run.created_at  # the old service began at creation
        assert body["finished_at"] is not None
    nulls = adopted.get(f"/coderun/{world.runs['failed_nulls'].id}").json()
    assert nulls["status"] == "failed"
    assert (nulls["result"], nulls["body"]) == ("", "")
    assert (nulls["extra"], nulls["params"], nulls["headers"]) == ({}, {}, {})
    kept = adopted.get(f"/coderun/{world.runs['older'].id}").json()
    assert kept["extra"] == {"status_code": 200, "content_type": "string"}
    # A code's runs, by its UUID or its ObjectID, newest first.
    code = world.codes["migrated"]
    for key in (code.id, code.mongo_object_id):
        listed = adopted.get("/coderun", code_id=key).json()
        assert [r["id"] for r in listed] == [world.runs[k].id for k in
                                             ("by_object_id", "failed_nulls", "older")]


def test_orphan_runs_stay_readable(adopted: Adopted):
    world = adopted.world
    orphan = world.runs["orphan"]
    for key in (orphan.id, orphan.mongo_object_id):
        body = adopted.get(f"/coderun/{key}").json()
        assert (body["id"], body["code_id"], body["result"]) == (
            orphan.id, world.deleted_code_id, "from a deleted code")
    for key in (world.deleted_code_id, world.deleted_code_mongo_id):
        listed = adopted.get("/coderun", code_id=key)
        assert listed.status_code == 200, listed.text
        assert {r["id"] for r in listed.json()} >= {orphan.id}
    assert adopted.get(f"/code/{world.deleted_code_id}").status_code == 404
    assert adopted.get("/coderun", code_id=str(uuid.uuid4())).status_code == 404
    # Our own runs still need their code: the key is there, only the adopted rows are exempt.
    with create_engine(adopted.url).connect() as connection:
        validated = connection.execute(text(
            "SELECT convalidated FROM pg_constraint WHERE conname = "
            "'fk_coderuns_code_id_codes'")).scalar_one()
        assert validated is False
        with pytest.raises(Exception, match="fk_coderuns_code_id_codes"):
            connection.execute(text(
                "INSERT INTO coderuns (id, code_id, status, result, extra, params, body, "
                "headers) VALUES (gen_random_uuid(), gen_random_uuid(), 'queued', '', '{}', "
                "'{}', '', '{}')"))


def test_runs_the_old_service_left_unfinished_are_ended_by_the_reaper(
        adopted: Adopted, platform: Platform):
    from codeactions.bootstrap import bootstrap
    from shared.runs import stuck_runs

    world = adopted.world
    unfinished = {world.runs[k].id for k in ("left_started", "left_queued", "orphan_started")}
    for run_id in unfinished:
        body = adopted.get(f"/coderun/{run_id}").json()
        assert body["status"] == "started" and body["worker"] == "flows-code-actions"
    settings = platform.settings(db_uri=adopted.url)
    own = bootstrap(settings)
    try:
        reaped = stuck_runs.reap(own, settings.stuck_run_margin)
    finally:
        own.db.dispose()
    assert {str(run_id) for run_id in reaped} == unfinished
    for run_id in unfinished:
        body = adopted.get(f"/coderun/{run_id}").json()
        assert body["status"] == "failed" and body["exit_reason"] == "worker_lost"
        assert "flows-code-actions" in body["result"]
        logs = adopted.get("/codelog", run_id=run_id).json()
        assert [log["type"] for log in logs["data"]] == ["error"]


def test_operator_libraries_survive_the_catalog_sync(adopted: Adopted, platform: Platform):
    from shared.codelibs.catalog import Library, sync_language
    from shared.db import Database

    # What a Python worker does at start with its image's manifest.
    db = Database(platform.settings(db_uri=adopted.url))
    try:
        sync_language(db, "python", [Library("httpx", "0.28.1", ("httpx",)),
                                     Library("requests", "2.32.3", ("requests",))])
    finally:
        db.dispose()
    listed = {lib["name"] for lib in adopted.get("/codelib", language="python").json()}
    assert {"operator-private-lib", "requests", "httpx"} <= listed
    with create_engine(adopted.url).connect() as connection:
        rows = dict(connection.execute(text(
            "SELECT name, catalog FROM codelibs WHERE name IN "
            "('operator-private-lib', 'requests')")).all())
    assert rows == {"operator-private-lib": False, "requests": False}


def test_permissions_keep_their_emails_and_grant_what_they_granted(
        adopted: Adopted, platform: Platform, idp):  # noqa: ANN001
    from api.app import create_app
    from codeactions.bootstrap import bootstrap

    world = adopted.world
    tag = uuid.uuid4().hex[:6]
    ana = idp.add(f"ana-{tag}", email="ana.silva@example.com")  # stored as Ana.Silva@Example.COM
    stranger = idp.add(f"stranger-{tag}", email="viewer@example.com")  # legacy project only
    service = idp.add(f"service-{tag}", email="flows@weni.ai", can_communicate_internally=True)
    app = create_app(bootstrap(platform.settings(db_uri=adopted.url, oidc_auth_enabled=True,
                                                 oidc_host=idp.url, oidc_realm=REALM)))
    try:
        client = app.test_client()

        def get(path: str, token: str) -> int:
            return client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code

        code = world.codes["migrated"]
        assert get(f"/code/{code.mongo_object_id}", ana) == 200
        assert get(f"/code/{code.mongo_object_id}", stranger) == 403
        assert get(f"/code?project_uuid={legacy.LEGACY_PROJECT}", stranger) == 200
        orphan = world.runs["orphan"].id
        assert get(f"/coderun/{orphan}", ana) == 403
        assert get(f"/coderun/{orphan}", service) == 200
        assert get(f"/coderun?code_id={world.deleted_code_mongo_id}", service) == 200
    finally:
        app.extensions["codeactions"].db.dispose()
    with create_engine(adopted.url).connect() as connection:
        emails = connection.execute(text(
            "SELECT email, role FROM user_permissions ORDER BY email")).all()
    assert emails == [("Ana.Silva@Example.COM", 3), ("dup@example.com", 3),
                      ("viewer@example.com", 1)]


def test_the_migrated_schema_is_exactly_ours(adopted: Adopted, platform: Platform):
    check = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"url={adopted.url}", "check"],
        cwd=REPO_ROOT, capture_output=True, text=True, env=platform.env)
    assert check.returncode == 0, check.stdout + check.stderr
    with create_engine(adopted.url).connect() as connection:
        schemas = set(connection.execute(text("SELECT nspname FROM pg_namespace")).scalars())
        tables = set(connection.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars())
    assert "go_service_v5" not in schemas and "schema_migrations" not in tables
    with create_engine(adopted.url).connect() as connection:
        granted = connection.execute(text(
            "SELECT has_table_privilege(:role, 'codes', 'SELECT'), "
            "has_table_privilege(:role, 'coderuns', 'SELECT'), "
            "has_table_privilege(:role, 'codes', 'INSERT')"), {"role": adopted.reader}).one()
    assert tuple(granted) == (True, True, False)  # the old tables' grants, no more


def test_a_second_migrate_changes_nothing(adopted: Adopted, platform: Platform):
    before = legacy.snapshot(adopted.url)
    again = codeactions(env_for(platform, adopted.url), "migrate")
    assert again.returncode == 0, again.stderr
    assert "Converted" not in again.stdout
    assert legacy.snapshot(adopted.url) == before
    dry = codeactions(env_for(platform, adopted.url), "migrate", "--dry-run")
    assert "Nothing to migrate" in dry.stdout


@pytest.mark.parametrize(("version", "dirty", "says"), [
    (5, True, "dirty at version 5"),
    (4, False, "adopts version 5 only"),
])
def test_a_dirty_or_unknown_old_version_is_refused_untouched(
        platform: Platform, version: int, dirty: bool, says: str):
    base = platform.settings().sqlalchemy_url
    name = f"refuse_{uuid.uuid4().hex[:8]}"
    url = legacy.create_database(base, name)
    try:
        legacy.build_old_schema(url, version=version, dirty=dirty)
        legacy.fill(url)
        before = legacy.snapshot(url)
        for args in (("migrate",), ("migrate", "--dry-run")):
            refused = codeactions(env_for(platform, url), *args)
            assert refused.returncode == 2, refused.stdout + refused.stderr
            assert says in refused.stderr and "nothing changed" in refused.stderr
            assert legacy.snapshot(url) == before
    finally:
        legacy.drop_database(base, name)


def test_a_failure_midway_leaves_the_old_database_as_it_was(platform: Platform):
    """A view on an old table stops the drop at the very end: all of it rolls back."""
    base = platform.settings().sqlalchemy_url
    name = f"rollback_{uuid.uuid4().hex[:8]}"
    url = legacy.create_database(base, name)
    try:
        legacy.build_old_schema(url)
        legacy.fill(url)
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.execute(text("CREATE VIEW report AS SELECT id, status FROM coderuns"))
        engine.dispose()
        before = legacy.snapshot(url)
        failed = codeactions(env_for(platform, url), "migrate")
        assert failed.returncode == 2, failed.stdout + failed.stderr
        assert "cannot be dropped" in failed.stderr and "report" in failed.stderr
        assert legacy.snapshot(url) == before
    finally:
        legacy.drop_database(base, name)
