"""`make chaos`'s accounting, on rows in the real schema: what it calls stranded, executed
twice, a 500 and a recovery. (The harness itself is run by `make chaos`, not here.)"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from codeactions.chaos.codes import MARKER_PREFIX
from codeactions.chaos.faults import Fault
from codeactions.chaos.load import NO_ANSWER, Answer
from codeactions.chaos.report import analyse, executed_twice, pending_runs, read_runs
from shared.logs.model import CodeLog
from shared.runs.model import CodeRun
from tests.unit.factories import a_code

T0 = 1_800_000_000.0  # the fault's part is back at T0 + 10


def _run(session, code, kind: str, seq: int, status: str, markers: list[str],  # noqa: ANN001
         result_marker: str | None = None, finished: float | None = None,
         reason: str | None = None) -> CodeRun:
    run = CodeRun(
        id=uuid.uuid4(), code_id=code.id, status=status, exit_reason=reason,
        params={"kind": kind, "seq": str(seq)}, body="", headers={}, extra={},
        result=json.dumps({"execution": result_marker}) if result_marker else "",
        finished_at=datetime.fromtimestamp(finished, UTC) if finished else None,
    )
    session.add(run)
    session.flush()
    for index, marker in enumerate(markers):
        session.add(CodeLog(run_id=run.id, code_id=code.id, type="info", seq=index,
                            content=MARKER_PREFIX + marker))
    session.add(CodeLog(run_id=run.id, code_id=code.id, type="info", seq=99,
                        content="something else"))
    return run


def test_runs_are_read_with_their_markers_and_classified(db) -> None:  # noqa: ANN001
    code = a_code(db)
    codes = {"python": str(code.id)}
    with db.session() as session:
        done = _run(session, code, "async", 1, "completed", ["a"], "a", T0 + 12)
        twice = _run(session, code, "async", 2, "completed", ["b", "c"], "c", T0 + 13)
        foreign = _run(session, code, "sync", 1, "completed", ["d"], "e", T0 + 11)
        stuck = _run(session, code, "async", 3, "started", ["f"])
        lost = _run(session, code, "sync", 2, "failed", [], reason="worker_lost",
                    finished=T0 + 5)
        refused = _run(session, code, "async", 4, "completed", ["g"], "g", T0 + 14)
        session.commit()
        conn = session.connection()
        runs = read_runs(conn, codes)
        pending = pending_runs(conn, [str(code.id)])

    assert pending == 1
    by_id = {run["id"]: run for run in runs}
    assert by_id[str(twice.id)]["log_markers"] == ["b", "c"]
    assert executed_twice(by_id[str(done.id)]) == []
    assert executed_twice(by_id[str(twice.id)]) == ["2 execution markers in its logs"]
    assert executed_twice(by_id[str(foreign.id)]) == [
        "result from another execution than its logs"]
    assert executed_twice({**by_id[str(done.id)], "executions": 2}) == ["claimed 2 times"]

    answers = [
        Answer("async", "python", 1, T0, T0 + 0.1, 202, run_id=str(done.id)),
        Answer("async", "python", 2, T0, T0 + 0.1, 202, run_id=str(twice.id)),
        Answer("async", "python", 3, T0, T0 + 0.1, 202, run_id=str(stuck.id)),
        Answer("async", "python", 4, T0 + 1, T0 + 1.1, 503, retry_after=False),
        Answer("async", "python", 5, T0 + 2, T0 + 2.1, 202, run_id=str(uuid.uuid4())),
        Answer("sync", "python", 2, T0 + 1, T0 + 6, 500, run_id=str(lost.id), run_failed=True),
        Answer("sync", "python", 3, T0 + 6, T0 + 6.5, 500),
        Answer("sync", "python", 4, T0 + 7, T0 + 60, NO_ANSWER),
        Answer("sync", "python", 1, T0 + 10, T0 + 11.5, 200),
    ]
    fault = Fault("kill -9 something", T0, back=T0 + 10)
    result = analyse("test", "a test", ["python"], ["python"], [fault], answers, runs,
                     {"seconds": 45}, {"running": 4, "exited": 1})

    assert result["runs"]["stranded"] == 1
    assert result["runs"]["executed_twice"] == 2
    assert result["runs"]["failed_by_reason"] == {"worker_lost": 1}
    assert result["runs"]["ran_after_an_error_answer"] == 1  # async 4 refused, then ran
    assert refused.id  # the run behind that 503
    assert len(result["async"]["accepted_but_missing"]) == 1
    assert result["answers_500"]["by_reason"] == {
        "worker_lost": 1, "no run: the platform's own error": 1}
    assert result["answers_503_without_retry_after"] == 1
    assert result["sync"]["hangs"] == 1
    # First sync 200 1.5 s after the part is back; first async run done 2 s after.
    assert result["recovery"]["per_fault"][0]["languages"]["python"] == {
        "sync": 1.5, "async": 2.0}
    assert result["recovery"]["worst_s"] == 2.0
    missed = {t["target"] for t in result["targets"] if not t["met"]}
    assert not any(t.startswith("recovery") for t in missed)
    assert len(missed) == len(result["targets"]) - 1


def test_a_language_that_never_succeeds_again_has_no_recovery() -> None:
    fault = Fault("kill -9 rabbitmq", T0, back=T0 + 10)
    answers = [Answer("sync", "python", 1, T0 + 1, T0 + 2, 200),  # before the part was back
               Answer("sync", "javascript", 1, T0 + 11, T0 + 12, 200)]
    result = analyse("test", "a test", ["python", "javascript"], ["python", "javascript"],
                     [fault], answers, [], {"seconds": 1}, {"running": 4})

    assert result["recovery"]["worst_s"] is None
    target = next(t for t in result["targets"] if t["target"].startswith("recovery"))
    assert (target["met"], target["measured"]) == (False, "never")


def test_a_fault_recovers_only_by_a_success_before_the_next_fault() -> None:
    first = Fault("SIGKILL worker-python", T0, back=T0 + 10)
    second = Fault("SIGKILL worker-python", T0 + 20, back=T0 + 30)
    answers = [Answer("sync", "python", 1, T0 + 24, T0 + 31, 200)]
    result = analyse("test", "a test", ["python"], ["python"], [first, second], answers, [],
                     {"seconds": 1}, {"running": 4})

    per_fault = result["recovery"]["per_fault"]
    assert per_fault[0]["languages"]["python"]["sync"] is None
    assert per_fault[1]["languages"]["python"]["sync"] == 1.0
    assert result["recovery"]["worst_s"] is None
