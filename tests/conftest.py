"""The real stack for the tests: embedded PostgreSQL, Redis, RabbitMQ, moto S3, Docker,
plus the platform's own API and worker processes, exactly as `make run` starts them.

The test services live in `.state/test` on their own ports, so `make run` may stay up.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_STATE = REPO_ROOT / ".state" / "test"
TEST_BASE_PORT = int(os.environ.get("CODEACTIONS_TEST_BASE_PORT", "25430"))
TEST_API_PORT = TEST_BASE_PORT + 10
CALLBACK_SECRET = "test-callback-signing-secret"
TEST_WORKER_METRICS_PORT = TEST_BASE_PORT + 20  # + the language's index
TEST_API_METRICS_DIR = TEST_STATE / "api-metrics"
CORS_ALLOWED_ORIGINS = "https://app.example.com,https://*.partner.example"
TEST_READ_TIMEOUT = 8  # seconds (FLOWS_CODE_ACTIONS_API_REQUEST_READ_TIMEOUT)


class Platform:
    """Handles on the running test platform."""

    def __init__(self, env: dict[str, str], urls: dict[str, str]) -> None:
        self.env = env
        self.urls = urls
        self.base_url = f"http://127.0.0.1:{TEST_API_PORT}"
        self.children: list[subprocess.Popen] = []
        self.worker_metrics_ports: dict[str, int] = {}
        self.stack = None  # the embedded services (codeactions.local.services.LocalStack)

    def settings(self, **overrides: object):  # noqa: ANN201
        from shared.settings import Settings

        # Env var names are accepted as init keys (validation aliases); overrides by field name.
        values: dict[str, object] = {
            key: value for key, value in self.env.items() if key.startswith("FLOWS_CODE_ACTIONS_")
        }
        return Settings(**values).model_copy(update=overrides)

    def url(self, path: str) -> str:
        return self.base_url + path


def _start_platform() -> Platform:
    """Services, schema, engine images, workers and API. Called once per session, before the
    first test (see `pytest_collection_finish`): on a fresh machine the image builds alone take
    minutes, which no single test's timeout should have to absorb."""
    from codeactions.local.children import built_languages, spawn_child
    from codeactions.local.platform import (
        local_environment,
        stack_urls,
        start_services,
        wait_for_http,
        wait_for_workers,
    )

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWS_CODE_ACTIONS_")}
    stack = start_services(TEST_STATE, TEST_BASE_PORT, {})
    urls = stack_urls(stack)
    env = local_environment(urls, base_env, TEST_STATE)
    env.update(
        {
            "FLOWS_CODE_ACTIONS_PORT": str(TEST_API_PORT),
            "FLOWS_CODE_ACTIONS_S3_BUCKET_NAME": "codeactions-test",
            "FLOWS_CODE_ACTIONS_BLACKLIST": "forbidden_term_xyz",
            "FLOWS_CODE_ACTIONS_LOG_LEVEL": "info",
            "FLOWS_CODE_ACTIONS_STATE_DIR": str(TEST_STATE),
            # Callback receivers in tests listen on loopback; retries come quickly.
            "FLOWS_CODE_ACTIONS_CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8",
            "FLOWS_CODE_ACTIONS_CALLBACK_SIGNING_SECRET": CALLBACK_SECRET,
            "FLOWS_CODE_ACTIONS_CALLBACK_RETRY_DELAY": "0.5",
            "FLOWS_CODE_ACTIONS_CALLBACK_MAX_ATTEMPTS": "4",
            "FLOWS_CODE_ACTIONS_API_METRICS_DIR": str(TEST_API_METRICS_DIR),
            # tests/integration/test_cors.py: one exact origin, one wildcard entry.
            "FLOWS_CODE_ACTIONS_CORS_ALLOWED_ORIGINS": CORS_ALLOWED_ORIGINS,
            # tests/integration/test_nasty_requests.py waits this long for its 408s.
            "FLOWS_CODE_ACTIONS_API_REQUEST_READ_TIMEOUT": str(TEST_READ_TIMEOUT),
        }
    )
    platform = Platform(env, urls)
    platform.stack = stack
    _reset_database(platform)
    try:
        cli = [sys.executable, "-m", "codeactions.cli"]
        subprocess.run([*cli, "migrate"], env=env, cwd=REPO_ROOT, check=True)
        # CODEACTIONS_TEST_PRUNE=0 keeps other checkouts' engine images (parallel work).
        prune = ["--prune"] if os.environ.get("CODEACTIONS_TEST_PRUNE", "1") != "0" else []
        subprocess.run([*cli, "images", *prune], env=env, cwd=REPO_ROOT, check=True)
        languages = built_languages()
        platform.worker_metrics_ports = {
            language: TEST_WORKER_METRICS_PORT + index for index, language in enumerate(languages)
        }
        workers = [
            spawn_child(["worker", "--language", language, "--concurrency", "4",
                         "--metrics-port", str(platform.worker_metrics_ports[language])], env)
            for language in languages
        ]
        platform.children.extend(workers)
        api = spawn_child(["api", "--workers", "2"], env)
        platform.children.append(api)
        wait_for_http(platform.url("/healthz"), 60, platform.children)
        wait_for_workers(platform.settings(), languages, 180, platform.children)
    except BaseException:
        _stop_platform(platform)
        raise
    return platform


def _stop_platform(platform: Platform) -> None:
    from codeactions.local.children import stop_children

    stop_children(platform.children)
    platform.stack.stop()


_session_platform: Platform | None = None
_session_platform_error: BaseException | None = None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Bring the platform up once, before any test runs, if a collected test needs it."""
    global _session_platform, _session_platform_error
    if session.config.option.collectonly:
        return
    if not any("platform" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    try:
        _session_platform = _start_platform()
    except Exception as exc:  # reported by every test that needs the platform
        _session_platform_error = exc


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _session_platform is not None:
        _stop_platform(_session_platform)


@pytest.fixture(scope="session")
def platform() -> Platform:
    if _session_platform_error is not None:
        raise RuntimeError("the test platform did not start") from _session_platform_error
    assert _session_platform is not None, "platform started by pytest_collection_finish"
    return _session_platform


def _reset_database(platform: Platform) -> None:
    """Every test session starts from an empty schema."""
    from sqlalchemy import create_engine, text

    url = platform.settings().sqlalchemy_url
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session")
def db(platform: Platform):  # noqa: ANN201
    from shared.db import Database

    database = Database(platform.settings())
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def s3(platform: Platform):  # noqa: ANN201
    from shared.logs.archive import LogArchive

    return LogArchive(platform.settings())


@pytest.fixture()
def http(platform: Platform) -> Iterator[requests.Session]:
    session = requests.Session()
    yield session
    session.close()
