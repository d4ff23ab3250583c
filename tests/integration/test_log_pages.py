"""Pages of a code's logs (`GET /codelog?code_id=…&page=N`): every page, in either order,
agrees with one total order (time, position in the run, id), and the total (kept by triggers,
never counted per request) stays exact as logs are written and deleted: a run deleted from
the middle of the list, the oldest logs deleted as retention does, older logs imported after
newer ones (they are listed by their time), an import run twice."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import requests
from sqlalchemy import delete, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from shared.logs.chunks import CodeLogChunk
from shared.logs.count import CodeLogCount
from shared.logs.model import CodeLog
from shared.runs.model import CodeRun
from tests.integration.helpers import create_code, run_now

PAGE = 20


def _add_logs(db, code_id: uuid.UUID, runs: int, per_run: int) -> list[uuid.UUID]:  # noqa: ANN001
    """Logs of several runs, written as the worker writes them (one INSERT per run); runs
    share timestamps so only the full order (time, seq, id) tells them apart."""
    base = datetime(2026, 11, 1, tzinfo=UTC)
    run_ids = []
    with db.session() as session:
        for index in range(runs):
            run_id = uuid.uuid4()
            session.execute(insert(CodeRun.__table__).values(
                id=run_id, code_id=code_id, status="completed", result="", extra={}, params={},
                body="", headers={}))
            at = base + timedelta(seconds=index % 2)
            session.connection().execute(insert(CodeLog.__table__), [
                {"id": uuid.uuid4(), "run_id": run_id, "code_id": code_id, "type": "info",
                 "content": f"run {index} line {seq}", "seq": seq, "created_at": at,
                 "updated_at": at} for seq in range(per_run)])
            run_ids.append(run_id)
        session.commit()
    return run_ids


def _expected(db, code_id: uuid.UUID) -> list[str]:  # noqa: ANN001
    with db.session() as session:
        rows = session.execute(
            select(CodeLog.id).where(CodeLog.code_id == code_id)
            .order_by(CodeLog.created_at.desc(), CodeLog.seq.desc(), CodeLog.id.desc())
        ).scalars()
        return [str(row) for row in rows]


def _all_pages(platform, code_id: str, order: str = "desc") -> tuple[list[str], int, int]:  # noqa: ANN001
    first = requests.get(platform.url("/codelog"),
                         params={"code_id": code_id, "order": order}).json()
    ids, pages = [], first["last_page"]
    for page in range(1, pages + 1):
        body = requests.get(platform.url("/codelog"),
                            params={"code_id": code_id, "page": page, "order": order}).json()
        assert body["total"] == first["total"] and body["page"] == page
        assert len(body["data"]) == min(PAGE, first["total"] - (page - 1) * PAGE)
        ids += [entry["id"] for entry in body["data"]]
    return ids, first["total"], pages


def test_every_page_agrees_with_one_order_and_the_total_is_exact(platform, db):
    code = create_code(platform, "def Run(engine):\n    pass\n")
    code_id = uuid.UUID(code["id"])
    runs = _add_logs(db, code_id, runs=7, per_run=19)  # 133 logs: 7 pages, the last of 13
    ids, total, pages = _all_pages(platform, code["id"])
    assert (total, pages) == (133, 7)
    assert ids == _expected(db, code_id)  # pages from the newest and the oldest end alike
    oldest_first, _, _ = _all_pages(platform, code["id"], order="asc")
    assert oldest_first == _expected(db, code_id)[::-1]  # the same, the other way round
    past = requests.get(platform.url("/codelog"), params={"code_id": code["id"], "page": 8})
    assert past.status_code == 200 and past.json()["data"] == []

    with db.session() as session:  # a run goes (its logs cascade): the total follows
        session.execute(delete(CodeRun).where(CodeRun.id == runs[3]))
        session.commit()
    ids, total, pages = _all_pages(platform, code["id"])
    assert (total, pages) == (114, 6)
    assert ids == _expected(db, code_id)

    with db.session() as session:  # the oldest logs go, as retention deletes them
        session.execute(delete(CodeLog).where(CodeLog.code_id == code_id,
                                              CodeLog.created_at < datetime(2026, 11, 1, 0, 0, 1,
                                                                            tzinfo=UTC)))
        session.commit()
    _add_logs(db, code_id, runs=1, per_run=5)  # and logs keep coming after both
    ids, total, pages = _all_pages(platform, code["id"], order="asc")
    assert (total, pages) == (43, 3)
    assert ids == _expected(db, code_id)[::-1]


def _import(db, code_id: uuid.UUID, run_id: uuid.UUID, logs: list[dict]) -> int:  # noqa: ANN001
    """As `codeactions import-logs` writes: one INSERT that skips the logs already there."""
    with db.session() as session:
        inserted = session.execute(
            pg_insert(CodeLog.__table__).on_conflict_do_nothing().returning(CodeLog.id),
            [{"run_id": run_id, "code_id": code_id, "type": "info", "updated_at": log["created_at"],
              **log} for log in logs]).all()
        session.commit()
    return len(inserted)


def _page_ids(platform, code_id: str, page: int, order: str) -> list[str]:  # noqa: ANN001
    body = requests.get(platform.url("/codelog"),
                        params={"code_id": code_id, "page": page, "order": order}).json()
    return [entry["id"] for entry in body["data"]]


def test_older_logs_imported_later_are_listed_by_time_at_any_page(platform, db):
    code = create_code(platform, "def Run(engine):\n    pass\n")
    code_id = uuid.UUID(code["id"])
    # 2,400 logs written as the worker writes them (the list is cut into several chunks)...
    with db.session() as session:
        run_ids = [uuid.uuid4() for _ in range(3)]
        for run_id in run_ids:
            session.execute(insert(CodeRun.__table__).values(
                id=run_id, code_id=code_id, status="completed", result="", extra={}, params={},
                body="", headers={}))
        session.commit()
    base = datetime(2026, 11, 1, tzinfo=UTC)
    for index in range(2):
        _import(db, code_id, run_ids[index], [
            {"id": uuid.uuid4(), "content": f"new {index}.{seq}", "seq": seq,
             "created_at": base + timedelta(hours=index, milliseconds=seq)}
            for seq in range(1200)])
    # ... then the old service's logs, older than all of them and in between them.
    old = [{"id": uuid.uuid4(), "content": f"old {n}", "seq": 0,
            "created_at": base + timedelta(minutes=-30 + 1 * n)} for n in range(130)]
    assert _import(db, code_id, run_ids[2], old) == 130
    with db.session() as session:
        counts = (session.get(CodeLogCount, code_id).total,
                  session.execute(select(func.count()).select_from(CodeLogChunk)
                                  .where(CodeLogChunk.code_id == code_id)).scalar_one(),
                  session.execute(select(func.sum(CodeLogChunk.n))
                                  .where(CodeLogChunk.code_id == code_id)).scalar_one())
    assert counts[0] == counts[2] == 2530 and counts[1] >= 4
    assert _import(db, code_id, run_ids[2], old) == 0  # a second import adds nothing...
    with db.session() as session:  # ... and changes no count
        assert (session.get(CodeLogCount, code_id).total,
                session.execute(select(func.count()).select_from(CodeLogChunk)
                                .where(CodeLogChunk.code_id == code_id)).scalar_one(),
                session.execute(select(func.sum(CodeLogChunk.n))
                                .where(CodeLogChunk.code_id == code_id)).scalar_one()) == counts

    expected = _expected(db, code_id)
    last = 127  # 2,530 logs: the last page holds 10
    for order, listed in (("desc", expected), ("asc", expected[::-1])):
        for page in (1, 2, 30, 63, 64, 100, 126, last):
            assert _page_ids(platform, code["id"], page, order) == \
                listed[(page - 1) * PAGE:page * PAGE], (order, page)
    oldest = requests.get(platform.url("/codelog"),
                          params={"code_id": code["id"], "page": last}).json()
    assert [entry["content"] for entry in oldest["data"]][-3:] == ["old 2", "old 1", "old 0"]
    assert oldest["last_page"] == last and oldest["total"] == 2530


def test_runs_count_their_logs_and_a_deleted_code_leaves_no_count(platform, db):
    code = create_code(platform, "def Run(engine):\n    for i in range(3):\n"
                                 "        engine.log.info(i)\n")
    for _ in range(2):
        run_now(platform, code["id"])
    body = requests.get(platform.url("/codelog"), params={"code_id": code["id"]}).json()
    assert body["total"] == 6 and [e["content"] for e in body["data"]][:3] == ["2", "1", "0"]
    assert requests.delete(platform.url(f"/code/{code['id']}")).status_code == 200
    with db.session() as session:
        assert session.get(CodeLogCount, uuid.UUID(code["id"])) is None
