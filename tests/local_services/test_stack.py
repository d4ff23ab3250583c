"""LocalStack against the real servers: start, use, restart the broker, adopt, stop."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pika
import psycopg
import pytest
import redis

from codeactions.local.services import LocalStack, StateDirBusyError
from codeactions.local.services.docker_engine import docker_engine_answers
from codeactions.local.services.processes import is_alive
from codeactions.local.services.readiness import port_accepts_connections
from tests.conftest import TEST_BASE_PORT

# Port bases no other stack uses: past the session stack's ports (base .. base+110), so
# checkouts testing side by side with distinct CODEACTIONS_TEST_BASE_PORTs never collide.
FULL_STACK_BASE = TEST_BASE_PORT + 500
LOCK_TEST_BASE = TEST_BASE_PORT + 510
CRASH_TEST_BASE = TEST_BASE_PORT + 520

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
WITHOUT_RABBITMQ_AND_DOCKER = {"rabbitmq": "amqp://not-started//", "docker": "not checked"}


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A fresh state directory outside pytest's basetemp.

    Every pytest session chmods /tmp/pytest-of-<user> back to 0700, which also resets the
    ACL mask that lets the postgres/rabbitmq users reach a state directory below it.
    """
    directory = Path(tempfile.mkdtemp(prefix="codeactions-local-services-"))
    yield directory / "state"
    shutil.rmtree(directory, ignore_errors=True)


def stack_ports(base: int) -> list[int]:
    """Every port a stack on `base` listens on, RabbitMQ's distribution and epmd included."""
    return [base, base + 1, base + 2, base + 3, base + 2 + 100, base + 2 + 101]


def select_one(postgres_url: str) -> int:
    conninfo = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, connect_timeout=5) as connection:
        return connection.execute("SELECT 1").fetchone()[0]


def redis_pings(redis_url: str) -> bool:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        return client.ping()
    finally:
        client.close()


def amqp_connects(amqp_url: str) -> bool:
    # Celery/kombu write the default vhost "/" as "//"; pika wants it percent-encoded.
    pika_url = amqp_url[:-2] + "/%2F" if amqp_url.endswith("//") else amqp_url
    connection = pika.BlockingConnection(pika.URLParameters(pika_url))
    try:
        return connection.is_open
    finally:
        connection.close()


def s3_bucket_names(endpoint: str) -> list[str]:
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    return [bucket["Name"] for bucket in client.list_buckets()["Buckets"]]


def test_full_stack_serves_restarts_broker_and_stops_cleanly(state_dir: Path) -> None:
    stack = LocalStack(state_dir, FULL_STACK_BASE)
    try:
        urls = stack.start()

        assert select_one(urls.postgres) == 1
        assert redis_pings(urls.redis)
        assert amqp_connects(urls.rabbitmq)
        assert s3_bucket_names(urls.s3) == []
        assert docker_engine_answers()

        assert stack.rabbitmq is not None
        stack.rabbitmq.stop()
        assert not port_accepts_connections(FULL_STACK_BASE + 2)
        stack.rabbitmq.start()
        assert amqp_connects(urls.rabbitmq)

        pids = [server.process.pid for server in stack.servers if server.process]
    finally:
        stack.stop()

    for port in stack_ports(FULL_STACK_BASE):
        assert not port_accepts_connections(port), f"port {port} still open"
    assert not [pid for pid in pids if is_alive(pid)]


def test_second_supervisor_on_the_same_state_dir_is_refused(state_dir: Path) -> None:
    overrides = {**WITHOUT_RABBITMQ_AND_DOCKER, "postgres": "postgresql://unused", "s3": "x"}
    with LocalStack(state_dir, LOCK_TEST_BASE, overrides) as first:
        assert redis_pings(first.urls.redis)
        with pytest.raises(StateDirBusyError):
            LocalStack(state_dir, LOCK_TEST_BASE, overrides).start()
    assert not port_accepts_connections(LOCK_TEST_BASE + 1)


CRASHING_SUPERVISOR = """
import json, os, sys
from pathlib import Path
from codeactions.local.services import LocalStack
stack = LocalStack(Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]))
stack.start()
print(json.dumps({server.name: server.process.pid for server in stack.servers}), flush=True)
os._exit(0)  # die without stop(): the services keep running, as after a crash
"""


def test_services_left_by_a_crashed_supervisor_are_reused(state_dir: Path) -> None:
    crashed = subprocess.run(
        [
            sys.executable,
            "-c",
            CRASHING_SUPERVISOR,
            str(state_dir),
            str(CRASH_TEST_BASE),
            json.dumps(WITHOUT_RABBITMQ_AND_DOCKER),
        ],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    left_running = json.loads(crashed.stdout.strip().splitlines()[-1])

    stack = LocalStack(state_dir, CRASH_TEST_BASE, WITHOUT_RABBITMQ_AND_DOCKER)
    try:
        started = time.monotonic()
        urls = stack.start()
        assert time.monotonic() - started < 5
        reused = {server.name: server.process.pid for server in stack.servers if server.process}
        assert reused == left_running
        assert select_one(urls.postgres) == 1
        assert redis_pings(urls.redis)
    finally:
        stack.stop()
    for port in (CRASH_TEST_BASE, CRASH_TEST_BASE + 1, CRASH_TEST_BASE + 3):
        assert not port_accepts_connections(port), f"port {port} still open"
