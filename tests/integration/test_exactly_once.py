"""At-least-once delivery, exactly-once effect: a redelivered run never executes twice."""

from __future__ import annotations

import time
import uuid

import docker
import requests
from sqlalchemy import func, select

from codeactions.bootstrap import bootstrap
from shared.after_commit.outbox import OutboxEntry
from shared.after_commit.steps import SWEEP_GRACE
from shared.codes.model import Code
from shared.logs.model import CodeLog
from shared.messaging import dispatch
from shared.messaging.celery_app import make_celery
from shared.runs import store as run_store
from shared.runs.model import CodeRun
from tests.integration.helpers import create_code
from worker.run_executor import RunExecutor
from worker.sandbox.sandbox import Sandbox

SOURCE = "def Run(engine):\n    engine.log.info('executed')\n"


def _new_run(db, code_id: str) -> CodeRun:  # noqa: ANN001
    """A queued run that nobody enqueued (the test delivers it itself)."""
    with db.session() as session:
        code = session.get(Code, uuid.UUID(code_id))
        run = CodeRun(id=uuid.uuid4(), code_id=code.id, status="queued", params={}, body="",
                      headers={}, extra={}, result="")
        run_store.add(session, run)
        session.commit()
    return run


def _log_count(db, run_id: uuid.UUID) -> int:  # noqa: ANN001
    with db.session() as session:
        return session.scalar(
            select(func.count()).select_from(CodeLog).where(CodeLog.run_id == run_id))


def test_executing_a_claimed_run_again_does_nothing(platform, db):
    code = create_code(platform, SOURCE, type="flow")
    run = _new_run(db, code["id"])
    settings = platform.settings()
    executor = RunExecutor(bootstrap(settings), Sandbox(docker.from_env(), settings),
                           worker_name="test-executor")
    assert executor.execute(str(run.id)) == "completed"
    assert executor.execute(str(run.id)) is None  # the redelivery finds it claimed
    assert _log_count(db, run.id) == 1


def test_duplicate_deliveries_through_the_broker_execute_once(platform, db):
    code = create_code(platform, SOURCE, type="flow")
    run = _new_run(db, code["id"])
    celery = make_celery(platform.settings())
    for _ in range(3):  # the same task delivered three times
        dispatch.publish_runs(celery, [(run.id, "python")])
    deadline = time.monotonic() + 60
    status = None
    while time.monotonic() < deadline:
        with db.session() as session:
            status = session.get(CodeRun, run.id).status
        if status == "completed":
            break
        time.sleep(0.2)
    assert status == "completed"
    _wait_queue_drained(celery, "runs.python")
    time.sleep(1.0)
    assert _log_count(db, run.id) == 1


def test_sync_calls_leave_nothing_owed_in_the_outbox(platform, db):
    """Each call's outbox entries (its enqueue, its logs' archive) are removed once done, in
    batches off the request path: well before the sweeper would redo them."""
    code = create_code(platform, SOURCE)
    answers = [requests.post(platform.url(f"/action/endpoint/{code['id']}"), timeout=60)
               for _ in range(5)]
    assert [answer.status_code for answer in answers] == [200] * 5
    started = time.monotonic()
    while True:
        with db.session() as session:
            runs = list(session.scalars(select(CodeRun).where(
                CodeRun.code_id == uuid.UUID(code["id"]))))
            owed = session.scalar(select(func.count()).select_from(OutboxEntry).where(
                OutboxEntry.run_id.in_([run.id for run in runs])))
        if not owed or time.monotonic() - started > 3:
            break
        time.sleep(0.1)
    assert owed == 0
    assert time.monotonic() - started < SWEEP_GRACE.total_seconds()
    assert sorted((run.status, run.executions) for run in runs) == [("completed", 1)] * 5


def _wait_queue_drained(celery, queue: str, seconds: float = 30) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    with celery.connection_for_write() as conn:
        channel = conn.channel()
        while time.monotonic() < deadline:
            _, ready, _ = channel.queue_declare(queue=queue, passive=True)
            if ready == 0:
                return
            time.sleep(0.2)
    raise AssertionError(f"{queue} still has messages")
