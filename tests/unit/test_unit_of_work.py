"""The unit of work: steps follow a commit (never a rollback), durable ones survive in the
outbox until done, and a failed step is handled by the one policy."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from shared.after_commit import outbox
from shared.after_commit.outbox import OutboxEntry
from shared.after_commit.steps import Step, StepKind
from shared.codes.model import Code
from shared.db import Database
from tests.unit.conftest import Recorder, make_platform


def _code(**values: object) -> Code:
    fields = {"name": "c", "type": "endpoint", "language": "python",
              "project_uuid": uuid.uuid4(), "source": "", **values}
    return Code(**fields)


def _entries(db) -> list[OutboxEntry]:  # noqa: ANN001
    with db.session() as session:
        return list(session.scalars(select(OutboxEntry)))


def test_steps_run_after_the_commit_in_the_order_registered(fast_platform, recorder: Recorder):
    run_id = uuid.uuid4()
    with fast_platform.unit_of_work() as uow:
        uow.session.add(_code())
        uow.after_commit(Step(StepKind.SIGNAL_DONE, run_id, {"status": "failed"}))
        uow.after_commit(Step(StepKind.ARCHIVE_LOGS, run_id))
        assert recorder.done == []  # nothing before the commit
        uow.commit()
    assert [step.kind for step in recorder.done] == [StepKind.SIGNAL_DONE, StepKind.ARCHIVE_LOGS]


def test_nothing_runs_when_the_unit_of_work_does_not_commit(fast_platform, db, recorder):
    with pytest.raises(RuntimeError):
        with fast_platform.unit_of_work() as uow:
            uow.session.add(_code(name="never stored"))
            uow.after_commit(Step(StepKind.ENQUEUE_RUN, uuid.uuid4(), {"language": "python"}))
            raise RuntimeError("the service failed before committing")
    assert recorder.done == []
    assert _entries(db) == []
    with db.session() as session:
        assert session.scalar(select(Code).where(Code.name == "never stored")) is None


def test_a_durable_step_is_in_the_outbox_with_the_commit_and_gone_once_done(
    fast_platform, db, recorder
):
    seen_in_outbox: list[int] = []

    def archive(steps: list[Step]) -> None:  # runs after the commit, before the clean-up
        with db.session() as session:
            seen_in_outbox.extend(e.id for e in outbox.pending_for(session, steps[0].run_id))

    fast_platform.after_commit._handlers[StepKind.ARCHIVE_LOGS] = archive
    run_id = uuid.uuid4()
    with fast_platform.unit_of_work() as uow:
        uow.after_commit(Step(StepKind.ARCHIVE_LOGS, run_id))
        uow.commit()
    assert len(seen_in_outbox) == 1
    assert _entries(db) == []


def test_a_failed_durable_step_stays_for_the_sweeper_with_its_error(fast_platform, db, recorder):
    recorder.fail[StepKind.SCHEDULE_CALLBACK] = ConnectionRefusedError("broker down")
    run_id = uuid.uuid4()
    with fast_platform.unit_of_work() as uow:
        uow.after_commit(Step(StepKind.SCHEDULE_CALLBACK, run_id))
        failures = uow.commit()
    assert [f.kind for f in failures] == [StepKind.SCHEDULE_CALLBACK]
    (entry,) = _entries(db)
    assert (entry.run_id, entry.kind, entry.attempts) == (run_id, "schedule_callback", 1)
    assert "broker down" in entry.last_error


def test_a_failed_signal_is_not_kept(fast_platform, db, recorder):
    recorder.fail[StepKind.SIGNAL_DONE] = ConnectionRefusedError("redis down")
    with fast_platform.unit_of_work() as uow:
        uow.after_commit(Step(StepKind.SIGNAL_DONE, uuid.uuid4(), {"status": "completed"}))
        failures = uow.commit()
    assert [f.kind for f in failures] == [StepKind.SIGNAL_DONE]
    assert _entries(db) == []


def test_a_one_statement_unit_of_work_holds_a_pooled_connection_only_until_its_commit(
    settings,
):
    # A real pool, not a test's savepoint: the production branch of `one_statement`.
    db = Database(settings)
    checked_out_in_steps: list[int] = []

    def handler(kind: StepKind):  # noqa: ANN202
        return lambda steps: checked_out_in_steps.append(db.engine.pool.checkedout())

    platform = make_platform(settings, db, {kind: handler(kind) for kind in StepKind})
    try:
        with platform.unit_of_work(one_statement=True) as uow:
            assert uow.connection.execute(select(1)).scalar() == 1
            assert db.engine.pool.checkedout() == 1
            with pytest.raises(RuntimeError, match="has none"):
                uow.session  # noqa: B018 - a one-statement unit of work has no session
            uow.after_commit(Step(StepKind.SIGNAL_DONE, uuid.uuid4(), {"status": "completed"}))
            uow.commit()
        assert checked_out_in_steps == [0]  # back in the pool before the steps ran
        assert db.engine.pool.checkedout() == 0

        with pytest.raises(LookupError):
            with platform.unit_of_work(one_statement=True) as uow:
                uow.connection.execute(select(1))
                raise LookupError("the service failed before its commit")
        assert db.engine.pool.checkedout() == 0
        assert checked_out_in_steps == [0]  # no commit, no step
    finally:
        db.dispose()
