"""At-least-once delivery, exactly-once effect: a redelivered run never executes twice."""

from __future__ import annotations

import time
import uuid

import docker
import redis
from sqlalchemy import func, select

from shared.codes.model import Code
from shared.logs.model import CodeLog
from shared.messaging.celery_app import make_celery
from shared.runs import submission as run_submission
from shared.runs.model import CodeRun
from tests.integration.helpers import create_code
from worker.run_executor import RunExecutor
from worker.sandbox.sandbox import Sandbox

SOURCE = "def Run(engine):\n    engine.log.info('executed')\n"


def _new_run(db, code_id: str) -> CodeRun:  # noqa: ANN001
    with db.session() as session:
        code = session.get(Code, uuid.UUID(code_id))
    return run_submission.create_run(db, run_submission.RunRequest(code))


def _log_count(db, run_id: uuid.UUID) -> int:  # noqa: ANN001
    with db.session() as session:
        return session.scalar(
            select(func.count()).select_from(CodeLog).where(CodeLog.run_id == run_id))


def test_executing_a_claimed_run_again_does_nothing(platform, db, s3):
    code = create_code(platform, SOURCE, type="flow")
    run = _new_run(db, code["id"])
    settings = platform.settings()
    executor = RunExecutor(settings, db, redis.Redis.from_url(settings.redis), s3,
                           Sandbox(docker.from_env(), settings), worker_name="test-executor")
    assert executor.execute(str(run.id)) == "completed"
    assert executor.execute(str(run.id)) is None  # the redelivery finds it claimed
    assert _log_count(db, run.id) == 1


def test_duplicate_deliveries_through_the_broker_execute_once(platform, db):
    code = create_code(platform, SOURCE, type="flow")
    run = _new_run(db, code["id"])
    celery = make_celery(platform.settings())
    for _ in range(3):  # the same task delivered three times
        run_submission.enqueue(db, celery, run, "python")
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
