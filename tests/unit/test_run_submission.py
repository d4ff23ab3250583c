"""Submitting runs: created and enqueued after one commit; a refusing broker ends every run
of the call and the caller is told (nothing of it ever executes)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from shared.after_commit.outbox import OutboxEntry
from shared.after_commit.steps import StepKind
from shared.errors import Unavailable
from shared.runs.submission import RunRequest, submit
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
