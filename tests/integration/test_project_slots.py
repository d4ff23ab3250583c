"""The Redis semaphore behind the per-project cap, against the real Redis."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
import redis

from shared.runs.project_slots import ProjectSlots
from tests.integration.event_broker import REPO_ROOT, eventually


@pytest.fixture()
def client(platform):  # noqa: ANN001, ANN201
    connection = redis.Redis.from_url(platform.settings().redis)
    yield connection
    connection.close()


def test_at_most_n_holders_per_project(client):  # noqa: ANN001
    slots = ProjectSlots(client, limit=2)
    project, other = str(uuid.uuid4()), str(uuid.uuid4())
    assert slots.try_acquire(project, "run-1")
    assert slots.try_acquire(project, "run-2")
    assert not slots.try_acquire(project, "run-3")  # past the limit
    assert slots.try_acquire(project, "run-2")  # a holder taking it again keeps its slot
    assert slots.try_acquire(other, "run-4")  # projects do not share slots
    assert slots.held(project) == 2
    slots.release(project, "run-1")
    assert slots.try_acquire(project, "run-3")
    assert not slots.try_acquire(project, "run-1")


def test_a_lease_that_is_renewed_holds_and_one_that_is_not_runs_out(client):  # noqa: ANN001
    slots = ProjectSlots(client, limit=1, lease_seconds=1.0)
    project = str(uuid.uuid4())
    assert slots.try_acquire(project, "kept")
    for _ in range(4):  # 2 s in all, twice the lease
        time.sleep(0.5)
        assert slots.renew(project, "kept")
        assert not slots.try_acquire(project, "waiting")
    time.sleep(1.2)  # no renewal for longer than the lease
    assert slots.try_acquire(project, "waiting")
    assert not slots.renew(project, "kept")


HOLDER = """
import sys, time, redis
from shared.runs.project_slots import ProjectSlots
slots = ProjectSlots(redis.Redis.from_url(sys.argv[1]), limit=1, lease_seconds=2.0)
assert slots.try_acquire(sys.argv[2], "holder")
print("holding", flush=True)
while True:
    time.sleep(0.5)
    slots.renew(sys.argv[2], "holder")
"""


def test_the_slot_of_a_process_that_dies_frees_itself(platform, client):  # noqa: ANN001
    slots = ProjectSlots(client, limit=1, lease_seconds=2.0)
    project = str(uuid.uuid4())
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, platform.settings().redis, project],
                              cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        time.sleep(3)  # longer than the lease: only renewal keeps it
        assert not slots.try_acquire(project, "next")
        holder.kill()  # dies without releasing
        holder.wait()
        eventually(lambda: slots.try_acquire(project, "next"), timeout=5, every=0.1)
    finally:
        holder.kill()
        holder.wait()
