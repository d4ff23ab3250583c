"""Submitting runs: created and enqueued after one commit; a refusing broker ends every run
of the call and the caller is told (nothing of it ever executes)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from shared.after_commit.outbox import OutboxEntry
from shared.after_commit.steps import StepKind
from shared.errors import NotFound, Unavailable
from shared.ids import EntityId
from shared.runs.model import CodeRun
from shared.runs.submission import CallRequest, RunRequest, submit, submit_call
from tests.unit.conftest import make_platform
from tests.unit.factories import a_code, reread


def test_a_run_is_stored_queued_then_enqueued_on_its_language_queue(fast_platform, db, recorder):
    code = a_code(db, language="javascript")
    (run,) = submit(fast_platform, [RunRequest(code, params={"a": "1"}, body="b")])
    stored = reread(db, run.id)
    assert (stored.status, stored.params, stored.body) == ("queued", {"a": "1"}, "b")
    (step,) = recorder.done
    assert (step.kind, step.run_id, step.args) == (
        StepKind.ENQUEUE_RUN, run.id, {"language": "javascript"})
    with db.session() as session:
        assert list(session.scalars(select(OutboxEntry))) == []


def _with_real_handlers(settings, db):  # noqa: ANN001, ANN202
    """The platform's own handlers, talking to a broker and a Redis that refuse
    connections (ports nobody listens on)."""
    return make_platform(settings, db)


def test_a_refusing_broker_ends_the_run_and_tells_the_caller(settings, db):
    platform = _with_real_handlers(settings, db)
    code = a_code(db)
    request = RunRequest(code)
    with pytest.raises(Unavailable, match="run queue is unavailable"):
        submit(platform, [request])
    run = reread(db, request.run_id)
    assert (run.status, run.exit_reason) == ("failed", "enqueue_failed")
    assert run.result.startswith("could not enqueue the run:")
    with db.session() as session:  # settled at once: nothing left for the sweeper
        assert list(session.scalars(select(OutboxEntry))) == []


def test_a_batch_is_all_or_none_when_the_broker_refuses(settings, db):
    platform = _with_real_handlers(settings, db)
    codes = [a_code(db, language=lang) for lang in ("python", "go", "python")]
    requests = [RunRequest(code) for code in codes]
    with pytest.raises(Unavailable):
        submit(platform, requests)
    runs = [reread(db, request.run_id) for request in requests]
    assert [(r.status, r.exit_reason) for r in runs] == [("failed", "enqueue_failed")] * 3


def test_a_batch_is_published_as_one_step(fast_platform, db, recorder):
    codes = [a_code(db) for _ in range(3)]
    runs = submit(fast_platform, [RunRequest(code) for code in codes])
    assert [step.run_id for step in recorder.done] == [run.id for run in runs]


def _runs_of(db, code_id):  # noqa: ANN001, ANN202
    with db.session() as session:
        return list(session.scalars(select(CodeRun).where(CodeRun.code_id == code_id)))


def test_a_sync_call_reads_its_code_with_the_insert(fast_platform, db, recorder):
    legacy_id = "0123456789abcdef01234567"
    code = a_code(db, language="go", timeout=7, mongo_object_id=legacy_id)
    for ref in (EntityId(uuid=code.id), EntityId(mongo_object_id=legacy_id)):
        call = CallRequest(ref, "endpoint", params={"a": "1"}, body="b", headers={"h": ["v"]})
        read, run = submit_call(fast_platform, call)
        assert (read.id, read.language, read.timeout, read.source) == (
            code.id, "go", 7, code.source)
        stored = reread(db, call.run_id)
        assert (stored.status, stored.code_id, stored.code_mongo_id) == (
            "queued", code.id, legacy_id)
        assert (stored.params, stored.body, stored.headers) == ({"a": "1"}, "b", {"h": ["v"]})
        assert (run.created_at, run.executions) == (stored.created_at, 0)
        step = recorder.done[-1]
        assert (step.kind, step.run_id, step.args) == (
            StepKind.ENQUEUE_RUN, call.run_id, {"language": "go"})
    with db.session() as session:  # published: nothing left for the sweeper
        assert list(session.scalars(select(OutboxEntry))) == []


def test_a_sync_call_of_a_missing_code_or_of_another_type_writes_nothing(
    fast_platform, db, recorder
):
    flow = a_code(db, type="flow")
    for call in (CallRequest(EntityId(uuid=flow.id), "endpoint"),
                 CallRequest(EntityId(mongo_object_id="f" * 24)),
                 CallRequest(EntityId(uuid=uuid.uuid4()))):
        with pytest.raises(NotFound, match="code not found"):
            submit_call(fast_platform, call)
        assert reread(db, call.run_id) is None
    assert _runs_of(db, flow.id) == [] and recorder.done == []
    with db.session() as session:
        assert list(session.scalars(select(OutboxEntry))) == []
    # The same code, without the type asked: it runs.
    submit_call(fast_platform, CallRequest(EntityId(uuid=flow.id)))
    assert len(_runs_of(db, flow.id)) == 1


def test_a_sync_call_the_broker_refuses_is_ended_and_the_caller_told(settings, db):
    platform = _with_real_handlers(settings, db)
    code = a_code(db)
    call = CallRequest(EntityId(uuid=code.id), "endpoint")
    with pytest.raises(Unavailable, match="run queue is unavailable"):
        submit_call(platform, call)
    run = reread(db, call.run_id)
    assert (run.status, run.exit_reason) == ("failed", "enqueue_failed")
    with db.session() as session:
        assert list(session.scalars(select(OutboxEntry))) == []


def test_the_sync_call_statement_writes_the_outbox_entry_the_sweeper_reads(db):
    from shared.runs import store as run_store

    code = a_code(db, language="javascript")
    run = CodeRun(id=uuid.uuid4(), status="queued", params={}, body="", headers={}, extra={},
                  result="", callback=None)
    with db.session() as session:
        code_read, entry_id = run_store.add_for_code(
            session.connection(), run, EntityId(uuid=code.id), StepKind.ENQUEUE_RUN.value,
            "endpoint")
        entry = session.get(OutboxEntry, entry_id)
        assert (entry.kind, entry.run_id, entry.args) == (
            "enqueue_run", run.id, {"language": "javascript"})
        assert entry.attempts == 0 and entry.due_at > run.created_at
        session.rollback()
