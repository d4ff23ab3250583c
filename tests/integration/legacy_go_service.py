"""The Go service's PostgreSQL database, built the way it builds it, for the adoption tests.

This is our own restatement of its schema (weni-ai/flows-code-actions, golang-migrate
migrations 1–5, as SPEC.md "What existing deployments rely on" describes it): text project
ids, no foreign key from runs to codes, a CHECK on codelibs that allows only python, JSON
maps that may hold `null`, and golang-migrate's own `schema_migrations` table. No pgcrypto:
the ids are given (the old migration created the extension, but a deployment may lack it).
The rows are the kinds a real deployment holds, each kept in `LegacyWorld` for the checks.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

OLD_SCHEMA = """
CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);

CREATE TABLE codes (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    mongo_object_id text UNIQUE,
    name varchar(255) NOT NULL,
    type varchar(50) NOT NULL CHECK (type IN ('flow', 'endpoint')),
    source text NOT NULL,
    language varchar(50) NOT NULL CHECK (language IN ('python', 'go', 'javascript')),
    url varchar(512),
    project_uuid varchar(255) NOT NULL,
    timeout integer NOT NULL DEFAULT 60 CHECK (timeout >= 5 AND timeout <= 300),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_codes_mongo_object_id ON codes (mongo_object_id);
CREATE INDEX idx_codes_project_uuid ON codes (project_uuid);
CREATE INDEX idx_codes_project_type ON codes (project_uuid, type);

CREATE TABLE codelibs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    mongo_object_id text UNIQUE,
    name varchar(255) NOT NULL,
    language varchar(50) NOT NULL CHECK (language IN ('python')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX idx_codelibs_unique_name_language ON codelibs (name, language);

CREATE TABLE coderuns (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    mongo_object_id text UNIQUE,
    code_id uuid NOT NULL,
    code_mongo_id text,
    status varchar(50) NOT NULL CHECK (status IN ('queued', 'started', 'completed', 'failed')),
    result text,
    extra jsonb DEFAULT '{}'::jsonb,
    params jsonb DEFAULT '{}'::jsonb,
    body text,
    headers jsonb DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_coderuns_code_id_created_at ON coderuns (code_id, created_at);
CREATE INDEX idx_coderuns_code_mongo_id ON coderuns (code_mongo_id);
CREATE INDEX idx_coderuns_extra ON coderuns USING gin (extra);

CREATE TABLE user_permissions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    mongo_object_id text UNIQUE,
    project_uuid varchar(255) NOT NULL,
    email varchar(255) NOT NULL,
    role integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX idx_user_permissions_unique_project_email
    ON user_permissions (project_uuid, email);

CREATE TABLE projects (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    mongo_object_id text UNIQUE,
    uuid varchar(255) NOT NULL UNIQUE,
    name varchar(255) NOT NULL,
    authorizations jsonb DEFAULT '[]'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_projects_authorizations ON projects USING gin (authorizations);
"""

LEGACY_PROJECT = "legacy-project-7"  # a project id that is not a UUID


def object_id() -> str:
    return secrets.token_hex(12)


def database_url(base_url: str, name: str) -> str:
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


def create_database(base_url: str, name: str) -> str:
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return database_url(base_url, name)


def drop_database(base_url: str, name: str) -> None:
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def build_old_schema(url: str, version: int = 5, dirty: bool = False) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(OLD_SCHEMA))
        connection.execute(text("INSERT INTO schema_migrations VALUES (:v, :d)"),
                           {"v": version, "d": dirty})
    engine.dispose()


@dataclass
class LegacyCode:
    id: str
    mongo_object_id: str | None
    name: str
    type: str
    language: str
    source: str
    project_uuid: str
    timeout: int
    url: str | None
    created_at: datetime


@dataclass
class LegacyRun:
    id: str
    mongo_object_id: str | None
    code_id: str
    code_mongo_id: str | None
    status: str
    result: str | None
    extra: object
    params: object
    body: str | None
    headers: object
    created_at: datetime


@dataclass
class LegacyWorld:
    """The rows written to the old database, by role."""

    project: str = field(default_factory=lambda: str(uuid.uuid4()))
    codes: dict[str, LegacyCode] = field(default_factory=dict)
    runs: dict[str, LegacyRun] = field(default_factory=dict)
    deleted_code_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    deleted_code_mongo_id: str = field(default_factory=object_id)
    permissions: list[tuple[str, str, int, datetime]] = field(default_factory=list)
    libraries: list[tuple[str, str | None]] = field(default_factory=list)


def fill(url: str) -> LegacyWorld:
    """Realistic rows: ObjectID-keyed codes and runs, a run called by ObjectID, a failed run
    with null maps, runs left `started` and `queued`, orphan runs (their code deleted), a
    non-UUID and a UUID project id (the UUID once in upper case), mixed-case emails."""
    world = LegacyWorld()
    now = datetime.now(UTC).replace(microsecond=123456)
    hour_ago, two_hours_ago = now - timedelta(hours=1), now - timedelta(hours=2)
    world.codes = {
        "migrated": LegacyCode(
            str(uuid.uuid4()), object_id(), "greeter", "endpoint", "python",
            "def Run(engine):\n    engine.result.set({'ok': True}, content_type='json')\n",
            world.project, 30, "https://example.com/hook", now - timedelta(days=40)),
        "plain": LegacyCode(
            str(uuid.uuid4()), None, "", "flow", "javascript", "console.log('hi')",
            LEGACY_PROJECT, 60, None, now - timedelta(days=3)),
        "upper": LegacyCode(
            str(uuid.uuid4()), object_id().upper(), "shouty", "endpoint", "go",
            "package main\nfunc main() {}\n", world.project.upper(), 300, None,
            now - timedelta(days=2)),
    }
    migrated, plain = world.codes["migrated"], world.codes["plain"]
    world.runs = {
        "by_object_id": LegacyRun(
            str(uuid.uuid4()), object_id(), migrated.id, migrated.mongo_object_id,
            "completed", '{"ok": true}', {"status_code": 201, "content_type": "json"},
            {"name": "ana"}, '{"x": 1}', {"X-Multi": ["a", "b"], "User_Agent": ["curl"]},
            now - timedelta(minutes=5)),
        "older": LegacyRun(
            str(uuid.uuid4()), None, migrated.id, None, "completed", "plain",
            {"status_code": 200, "content_type": "string"}, {}, "", {},
            now - timedelta(minutes=50)),
        "failed_nulls": LegacyRun(
            str(uuid.uuid4()), None, migrated.id, None, "failed", None, "null", None, None,
            "null", now - timedelta(minutes=30)),
        "left_started": LegacyRun(
            str(uuid.uuid4()), None, plain.id, None, "started", "", {}, {}, "", {}, hour_ago),
        "left_queued": LegacyRun(
            str(uuid.uuid4()), None, plain.id, None, "queued", None, None, None, None, None,
            two_hours_ago),
        "orphan": LegacyRun(
            str(uuid.uuid4()), object_id(), world.deleted_code_id, world.deleted_code_mongo_id,
            "completed", "from a deleted code", {"status_code": 200, "content_type": "text"},
            {}, "", {}, now - timedelta(days=1)),
        "orphan_started": LegacyRun(
            str(uuid.uuid4()), None, world.deleted_code_id, None, "started", None, None, None,
            None, None, hour_ago),
    }
    world.permissions = [
        (world.project, "Ana.Silva@Example.COM", 3, now - timedelta(days=9)),
        (LEGACY_PROJECT, "viewer@example.com", 1, now - timedelta(days=9)),
        # One person, the project spelt two ways: the newer row (role 3) wins the merge.
        (world.project.upper(), "dup@example.com", 1, now - timedelta(days=8)),
        (world.project, "dup@example.com", 3, now - timedelta(days=1)),
    ]
    world.libraries = [("requests", object_id()), ("operator-private-lib", None)]

    engine = create_engine(url)
    with engine.begin() as connection:
        for code in world.codes.values():
            connection.execute(text(
                "INSERT INTO codes (id, mongo_object_id, name, type, source, language, url, "
                "project_uuid, timeout, created_at, updated_at) VALUES (:id, :mongo_object_id, "
                ":name, :type, :source, :language, :url, :project_uuid, :timeout, :created_at, "
                ":created_at)"), vars(code))
        for run in world.runs.values():
            values = dict(vars(run))
            for name in ("extra", "params", "headers"):  # "null" is JSON null, None SQL NULL
                value = values[name]
                values[name] = value if value is None or value == "null" else json.dumps(value)
            connection.execute(text(
                "INSERT INTO coderuns (id, mongo_object_id, code_id, code_mongo_id, status, "
                "result, extra, params, body, headers, created_at, updated_at) VALUES (:id, "
                ":mongo_object_id, :code_id, :code_mongo_id, :status, :result, "
                "CAST(:extra AS jsonb), CAST(:params AS jsonb), :body, CAST(:headers AS jsonb), "
                ":created_at, :created_at + interval '2 seconds')"), values)
        for project, email, role, at in world.permissions:
            connection.execute(text(
                "INSERT INTO user_permissions (project_uuid, email, role, created_at, "
                "updated_at) VALUES (:p, :e, :r, :at, :at)"),
                {"p": project, "e": email, "r": role, "at": at})
        connection.execute(text(
            "INSERT INTO projects (mongo_object_id, uuid, name, authorizations) VALUES "
            "(:oid, :uuid, 'Main', CAST(:auth AS jsonb)), (NULL, :legacy, 'Old', 'null')"),
            {"oid": object_id(), "uuid": world.project, "legacy": LEGACY_PROJECT,
             "auth": json.dumps([{"user_email": "Ana.Silva@Example.COM", "role": 3}])})
        for name, mongo_id in world.libraries:
            connection.execute(text(
                "INSERT INTO codelibs (mongo_object_id, name, language) VALUES (:m, :n, "
                "'python')"), {"m": mongo_id, "n": name})
    engine.dispose()
    return world


def snapshot(url: str) -> dict[str, object]:
    """Everything a conversion could change: schemas, tables, constraints, indexes and every
    row of every table (as an md5 of its text)."""
    engine = create_engine(url)
    state: dict[str, object] = {}
    with engine.connect() as connection:
        state["schemas"] = sorted(connection.execute(text(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg_%' "
            "AND nspname <> 'information_schema'")).scalars())
        tables = sorted(connection.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars())
        state["constraints"] = sorted(connection.execute(text(
            "SELECT conrelid::regclass::text || ':' || conname || ':' || convalidated "
            "FROM pg_constraint WHERE connamespace = 'public'::regnamespace")).scalars())
        state["indexes"] = sorted(connection.execute(text(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")).scalars())
        for table in tables:
            state[f"rows:{table}"] = connection.execute(text(
                f'SELECT count(*) || \':\' || coalesce(md5(string_agg(t::text, \',\' '
                f'ORDER BY t::text)), \'\') FROM "{table}" t')).scalar_one()
    engine.dispose()
    return state


# --- running our commands and our API on such a database --------------------------------


def run_cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    from tests.conftest import REPO_ROOT

    return subprocess.run([sys.executable, "-m", "codeactions.cli", *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def env_for(platform, url: str, **extra: str) -> dict[str, str]:  # noqa: ANN001
    return {**platform.env, "FLOWS_CODE_ACTIONS_DB_URI": url, **extra}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serve_api(platform, url: str) -> Iterator[str]:  # noqa: ANN001
    """An API process of ours on the database at `url`; yields its base URL."""
    from codeactions.local.children import spawn_child, stop_children
    from codeactions.local.platform import wait_for_http

    port = free_port()
    api = spawn_child(["api", "--workers", "1"], env_for(
        platform, url, FLOWS_CODE_ACTIONS_PORT=str(port),
        FLOWS_CODE_ACTIONS_API_METRICS_DIR=tempfile.mkdtemp(prefix="adopt-metrics-")))
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(base + "/healthz", 60, [api])
        yield base
    finally:
        stop_children([api])


@contextmanager
def adopted_database(platform) -> Iterator[tuple[str, LegacyWorld]]:  # noqa: ANN001
    """A database the Go service built and filled, already through `codeactions migrate`."""
    base = platform.settings().sqlalchemy_url
    name = f"adopt_{uuid.uuid4().hex[:8]}"
    url = create_database(base, name)
    try:
        build_old_schema(url)
        world = fill(url)
        migrated = run_cli(env_for(platform, url), "migrate")
        assert migrated.returncode == 0, migrated.stderr
        yield url, world
    finally:
        drop_database(base, name)
