"""The fast layer: services against a real PostgreSQL, each test inside a transaction that is
rolled back, no broker, worker or API. Only the embedded PostgreSQL is started (its own state
and port), and the schema comes from the migrations.

Step handlers are the seam: by default they record the steps a service registered (what
would be published, signalled, archived); `down_broker`/`down_redis` are real clients of
ports where nothing listens, so failure paths meet the real exceptions of the libraries we
ship with.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

from shared.after_commit.handlers import step_expiries
from shared.after_commit.runner import AfterCommitRunner, Handler
from shared.after_commit.steps import Step, StepKind
from shared.db import Database
from shared.platform import Platform
from shared.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
UNIT_STATE = REPO_ROOT / ".state" / "unit"
UNIT_PG_PORT = int(os.environ.get("CODEACTIONS_TEST_BASE_PORT", "25430")) + 600


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    from codeactions.local.services import PostgresServer

    server = PostgresServer(UNIT_STATE, UNIT_PG_PORT)
    url = server.start()
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    env = {**os.environ, "FLOWS_CODE_ACTIONS_DB_URI": url}
    subprocess.run([sys.executable, "-m", "codeactions.cli", "migrate"], env=env,
                   cwd=REPO_ROOT, check=True, capture_output=True)
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    port = closed_port()
    return Settings(
        FLOWS_CODE_ACTIONS_DB_URI=database_url,
        FLOWS_CODE_ACTIONS_REDIS=f"redis://127.0.0.1:{port}/0",
        FLOWS_CODE_ACTIONS_RABBITMQ_URL=f"amqp://guest:guest@127.0.0.1:{port}//",
        FLOWS_CODE_ACTIONS_S3_ENABLED="false",
    )


@pytest.fixture()
def db(settings: Settings) -> Iterator[Database]:
    """A database whose every transaction is a savepoint of one that is rolled back."""
    engine = create_engine(settings.sqlalchemy_url)
    connection = engine.connect()
    outer = connection.begin()
    try:
        yield Database.bound_to(connection)
    finally:
        outer.rollback()
        connection.close()
        engine.dispose()


@dataclass
class Recorder:
    """Records the steps handed to it; `fail` kinds raise like a dependency that is down."""

    done: list[Step] = field(default_factory=list)
    fail: dict[StepKind, Exception] = field(default_factory=dict)

    def handler(self, kind: StepKind) -> Handler:
        def handle(steps: list[Step]) -> None:
            if kind in self.fail:
                raise self.fail[kind]
            self.done.extend(steps)

        return handle

    def kinds(self) -> list[tuple[StepKind, str]]:
        return [(step.kind, str(step.run_id)) for step in self.done]


@pytest.fixture()
def recorder() -> Recorder:
    return Recorder()


def make_platform(
    settings: Settings, db: Database, handlers: dict[StepKind, Handler] | None = None
) -> Platform:
    """Without `handlers`, the platform's own (shared/after_commit/handlers.py), talking to
    the settings' broker and Redis: ports where nothing listens."""
    from shared.after_commit.handlers import step_handlers
    from shared.logs.archive import LogArchive
    from shared.messaging.celery_app import make_celery

    celery = make_celery(settings)
    # A publish to a refusing broker must fail at once, not after Celery's retries.
    celery.conf.task_publish_retry = False
    celery.conf.broker_connection_timeout = 1
    client = redis.Redis.from_url(settings.redis, socket_connect_timeout=0.5)
    archive = LogArchive(settings)
    if handlers is None:
        handlers = step_handlers(celery, client, db, archive)
    runner = AfterCommitRunner(db, handlers, step_expiries())
    return Platform(settings, db, client, celery, archive, runner)


@pytest.fixture()
def fast_platform(settings: Settings, db: Database, recorder: Recorder) -> Platform:
    """The platform of one test: its database rolled back, its steps recorded."""
    return make_platform(settings, db, {kind: recorder.handler(kind) for kind in StepKind})
