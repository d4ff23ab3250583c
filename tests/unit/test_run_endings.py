"""Ending runs outside their worker: cancel, the stuck-run reaper, expired steps. Each wakes
the run's waiters and schedules its callback after the commit, whatever Redis does."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from shared.after_commit.outbox import OutboxEntry
from shared.after_commit.steps import StepKind
from shared.errors import Conflict, Unavailable
from shared.ids import EntityId
from shared.logs.model import CodeLog
from shared.runs import cancellation, stuck_runs
from tests.unit.conftest import Recorder
from tests.unit.factories import a_code, a_run, reread


def test_cancelling_a_queued_run_ends_it_and_schedules_its_callback(
    fast_platform, db, recorder: Recorder
):
    run = a_run(db, a_code(db), callback="https://example.com/hook")
    cancelled = cancellation.cancel(fast_platform, EntityId(uuid=run.id))
    assert (cancelled.status, cancelled.exit_reason, cancelled.result) == (
        "failed", "cancelled", "cancelled")
    assert recorder.kinds() == [(StepKind.SIGNAL_DONE, str(run.id)),
                                (StepKind.SCHEDULE_CALLBACK, str(run.id))]


def test_a_cancel_whose_signal_fails_still_schedules_the_callback(fast_platform, db, recorder):
    recorder.fail[StepKind.SIGNAL_DONE] = ConnectionError("Redis is down")
    run = a_run(db, a_code(db), callback="https://example.com/hook")
    cancellation.cancel(fast_platform, EntityId(uuid=run.id))
    assert recorder.kinds() == [(StepKind.SCHEDULE_CALLBACK, str(run.id))]
    assert reread(db, run.id).callback["status"] == "pending"


def test_a_cancel_whose_callback_cannot_be_scheduled_leaves_it_to_the_sweeper(
    fast_platform, db, recorder
):
    recorder.fail[StepKind.SCHEDULE_CALLBACK] = ConnectionError("broker down")
    run = a_run(db, a_code(db), callback="https://example.com/hook")
    cancellation.cancel(fast_platform, EntityId(uuid=run.id))
    with db.session() as session:
        (entry,) = session.scalars(select(OutboxEntry))
    assert (entry.kind, entry.run_id) == ("schedule_callback", run.id)


def test_cancelling_a_started_run_without_redis_answers_unavailable(fast_platform, db):
    run = a_run(db, a_code(db), status="started", started_ago=1)
    with pytest.raises(Unavailable):
        cancellation.cancel(fast_platform, EntityId(uuid=run.id))
    assert reread(db, run.id).status == "started"


def test_cancelling_a_completed_run_is_a_conflict(fast_platform, db):
    run = a_run(db, a_code(db), status="completed")
    with pytest.raises(Conflict):
        cancellation.cancel(fast_platform, EntityId(uuid=run.id))


def test_the_reaper_ends_a_run_of_a_dead_worker_with_its_reason(fast_platform, db, recorder):
    code = a_code(db, timeout=5)
    lost = a_run(db, code, status="started", started_ago=120, callback="https://example.com/h")
    young = a_run(db, code, status="started", started_ago=1)
    assert stuck_runs.reap(fast_platform, margin_seconds=10) == [lost.id]
    run = reread(db, lost.id)
    assert (run.status, run.exit_reason) == ("failed", "worker_lost")
    assert reread(db, young.id).status == "started"
    with db.session() as session:
        (entry,) = session.scalars(select(CodeLog).where(CodeLog.run_id == lost.id))
    assert entry.type == "error" and "lost" in entry.content
    assert recorder.kinds() == [(StepKind.SIGNAL_DONE, str(lost.id)),
                                (StepKind.SCHEDULE_CALLBACK, str(lost.id))]


def _age_outbox(db, seconds: float) -> None:  # noqa: ANN001
    """Make every outbox entry due, as if created `seconds` ago."""
    past = datetime.now(UTC) - timedelta(seconds=seconds)
    with db.session() as session:
        session.execute(update(OutboxEntry).values(created_at=past, due_at=past))
        session.commit()


def test_the_sweeper_redoes_a_step_whose_process_died(fast_platform, db, recorder):
    recorder.fail[StepKind.SCHEDULE_CALLBACK] = ConnectionError("broker down")
    run = a_run(db, a_code(db), callback="https://example.com/hook")
    cancellation.cancel(fast_platform, EntityId(uuid=run.id))
    del recorder.fail[StepKind.SCHEDULE_CALLBACK]  # the broker is back
    _age_outbox(db, 5)
    report = fast_platform.after_commit.sweep()
    assert (report.done, report.retried, report.expired) == (1, 0, 0)
    assert (StepKind.SCHEDULE_CALLBACK, str(run.id)) in recorder.kinds()
    with db.session() as session:
        assert list(session.scalars(select(OutboxEntry))) == []


def test_a_callback_never_scheduled_expires_as_failed(fast_platform, db, recorder):
    recorder.fail[StepKind.SCHEDULE_CALLBACK] = ConnectionError("broker down")
    run = a_run(db, a_code(db), callback="https://example.com/hook")
    cancellation.cancel(fast_platform, EntityId(uuid=run.id))
    _age_outbox(db, 2 * 3600)
    report = fast_platform.after_commit.sweep()
    assert report.expired == 1
    callback = reread(db, run.id).callback
    assert callback["status"] == "failed"
    assert "could not be scheduled" in callback["attempts"][-1]["error"]


def test_an_enqueue_left_in_the_outbox_is_published_again(fast_platform, db, recorder):
    """The API died between its commit and the publish: the run is still queued, the
    sweeper publishes it (a second message would be harmless: the claim is atomic)."""
    from shared.after_commit import outbox
    from shared.after_commit.steps import Step

    run = a_run(db, a_code(db))
    with db.session() as session:
        outbox.add(session.connection(),
                   [Step(StepKind.ENQUEUE_RUN, run.id, {"language": "python"})])
        session.commit()
    _age_outbox(db, 30)
    assert fast_platform.after_commit.sweep().done == 1
    assert recorder.kinds() == [(StepKind.ENQUEUE_RUN, str(run.id))]


def test_an_enqueue_that_never_succeeds_ends_the_run(fast_platform, db, recorder):
    from shared.after_commit import outbox
    from shared.after_commit.steps import Step

    recorder.fail[StepKind.ENQUEUE_RUN] = ConnectionError("broker down")
    run = a_run(db, a_code(db))
    with db.session() as session:
        outbox.add(session.connection(),
                   [Step(StepKind.ENQUEUE_RUN, run.id, {"language": "python"})])
        session.commit()
    _age_outbox(db, 10)
    assert fast_platform.after_commit.sweep().retried == 1
    assert reread(db, run.id).status == "queued"
    _age_outbox(db, 3600)
    assert fast_platform.after_commit.sweep().expired == 1
    ended = reread(db, run.id)
    assert (ended.status, ended.exit_reason) == ("failed", "enqueue_failed")
    assert (StepKind.SIGNAL_DONE, str(run.id)) in recorder.kinds()


def test_unknown_run_ids_are_not_found(fast_platform):
    from shared.errors import NotFound

    with pytest.raises(NotFound):
        cancellation.cancel(fast_platform, EntityId(uuid=uuid.uuid4()))
