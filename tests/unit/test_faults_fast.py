"""Fault handling that needs no stack: leases and the reaper, waiting without Redis, deleting
a code with runs in flight, and outages named in 503 answers."""

from __future__ import annotations

import time
import uuid

import pytest
import redis
import sqlalchemy
from sqlalchemy import create_engine, text

from shared.after_commit.steps import StepKind
from shared.codes import service as code_service
from shared.ids import EntityId
from shared.runs import store as run_store
from shared.runs import stuck_runs
from shared.runs.completion import CompletionWaiter
from tests.unit.conftest import closed_port
from tests.unit.factories import a_code, a_run, reread


def test_a_run_whose_lease_ran_out_is_ended_and_one_still_leased_is_not(fast_platform, db):
    code = a_code(db, timeout=300)
    lost = a_run(db, code, status="started", started_ago=30, lease_left=-1)
    alive = a_run(db, code, status="started", started_ago=30, lease_left=15)
    assert stuck_runs.reap(fast_platform, margin_seconds=60) == [lost.id]
    assert reread(db, lost.id).exit_reason == "worker_lost"
    assert reread(db, alive.id).status == "started"


def test_a_run_left_started_without_a_lease_ends_past_its_timeout(fast_platform, db):
    """The old service's `started` rows have no lease (and maybe no start time)."""
    code = a_code(db, timeout=5)
    old = a_run(db, code, status="started", started_ago=120)
    assert stuck_runs.reap(fast_platform, margin_seconds=10) == [old.id]


def test_renewing_extends_only_started_runs(db):
    code = a_code(db)
    started = a_run(db, code, status="started", started_ago=5, lease_left=1)
    done = a_run(db, code, status="completed")
    with db.begin() as connection:
        run_store.renew_leases(connection, [started.id, done.id], 60)
    assert (reread(db, started.id).lease_expires_at - reread(db, started.id).started_at
            ).total_seconds() > 60
    assert reread(db, done.id).lease_expires_at is None


def test_the_claim_counts_executions_and_takes_a_lease(db):
    code = a_code(db)
    run = a_run(db, code)
    with db.session() as session:
        assert run_store.claim_with_code(session.connection(), run.id, "w1", 20) is not None
        assert run_store.claim_with_code(session.connection(), run.id, "w2", 20) is None
        session.commit()
    claimed = reread(db, run.id)
    assert (claimed.status, claimed.worker, claimed.executions) == ("started", "w1", 1)
    assert 19 <= (claimed.lease_expires_at - claimed.started_at).total_seconds() <= 21


def test_a_waiter_without_redis_learns_the_end_from_the_database(settings):
    down = redis.Redis(port=closed_port(), socket_connect_timeout=0.2)
    ended_after = time.monotonic() + 1.0
    started = time.monotonic()
    with CompletionWaiter(down, str(uuid.uuid4()),
                          ended=lambda: time.monotonic() > ended_after) as waiter:
        assert waiter.wait(timeout=30) == "ended"
    assert time.monotonic() - started < 10  # at the next poll, not at the timeout


def test_deleting_a_code_ends_its_runs_in_flight_first(fast_platform, db, recorder):
    code = a_code(db)
    queued = a_run(db, code)
    started = a_run(db, code, status="started", started_ago=1)
    done = a_run(db, code, status="completed")
    code_service.delete(fast_platform, EntityId(uuid=code.id))
    signalled = {step.run_id for step in recorder.done if step.kind == StepKind.SIGNAL_DONE}
    assert signalled == {queued.id, started.id}
    assert done.id not in signalled


def test_outages_are_named_and_bugs_are_not():
    from api.errors import dependency_down

    port = closed_port()
    with pytest.raises(redis.ConnectionError) as redis_down:
        redis.Redis(port=port, socket_connect_timeout=0.2).ping()
    engine = create_engine(f"postgresql+psycopg://x@127.0.0.1:{port}/x")
    with pytest.raises(sqlalchemy.exc.OperationalError) as database_down:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    import kombu

    with pytest.raises(kombu.exceptions.OperationalError) as broker_down:
        kombu.Connection(f"amqp://guest:guest@127.0.0.1:{port}//",
                         connect_timeout=0.5).ensure_connection(max_retries=1)
    assert dependency_down(redis_down.value) == "Redis"
    assert dependency_down(database_down.value) == "PostgreSQL"
    assert "RabbitMQ" in dependency_down(broker_down.value)
    assert dependency_down(KeyError("a bug")) is None


def test_the_watchdog_restarts_a_worker_that_stops_consuming_and_only_then():
    from worker.watchdog import ConsumptionWatchdog

    fired: list[bool] = []
    ready = {"n": 3}
    dog = ConsumptionWatchdog(lambda: ready["n"], concurrency=2, patience=30,
                              on_stuck=lambda: fired.append(True))
    t0 = time.monotonic()
    dog.check(t0)  # work waits, slots are free: the clock starts
    dog._received()  # a task arrives: it consumes, the clock starts again
    dog.check(t0 + 20)
    dog.check(t0 + 49)
    assert fired == []
    ready["n"] = 0  # nothing waits: nothing to judge
    dog.check(t0 + 100)
    ready["n"] = 1
    dog.check(t0 + 110)
    dog.check(t0 + 141)  # 31 s with work waiting, free slots and nothing received
    assert fired == [True]
    dog.check(t0 + 200)
    assert fired == [True]  # once


def test_the_watchdog_does_not_judge_a_busy_worker():
    from worker.watchdog import ConsumptionWatchdog

    fired: list[bool] = []
    dog = ConsumptionWatchdog(lambda: 5, concurrency=1, patience=30,
                              on_stuck=lambda: fired.append(True))
    dog._task_started()
    for now in (0.0, 40.0, 80.0):
        dog.check(now)
    assert fired == []
