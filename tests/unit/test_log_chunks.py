"""The counted chunks of a code's log list (`code_log_chunks`, shared/logs/chunks.py) against
the real PostgreSQL triggers: after any mix of writes (late and older logs, inserts that skip
rows already there, deleted runs, the oldest logs deleted) every chunk counts exactly the logs
in its range, no chunk outgrows 1,000 logs, and pages at either end and in the middle, in
either order, are the slices of the one order (created_at, seq, id)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Text, case, cast, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from shared.db import Database
from shared.logs import store as log_store
from shared.logs.chunks import CodeLogChunk
from shared.logs.count import CodeLogCount
from shared.logs.model import CodeLog
from shared.orm import table_of
from shared.runs.model import CodeRun
from tests.unit.factories import a_code, a_run

BASE = datetime(2026, 11, 1, tzinfo=UTC)


def _write(session: Session, code_id: uuid.UUID, run_id: uuid.UUID, count: int,
           at: datetime, again: Sequence[uuid.UUID] = ()) -> list[uuid.UUID]:
    """One INSERT … ON CONFLICT DO NOTHING, as the worker and import-logs write; `again`: ids
    already stored, written once more (skipped)."""
    ids = [uuid.uuid4() for _ in range(count)]
    rows = [{"id": log_id, "run_id": run_id, "code_id": code_id, "type": "info",
             "content": "", "seq": seq, "created_at": at, "updated_at": at}
            for seq, log_id in enumerate(ids)]
    rows += [{"id": log_id, "run_id": run_id, "code_id": code_id, "type": "info",
              "content": "", "seq": 0, "created_at": at, "updated_at": at} for log_id in again]
    if rows:
        session.execute(insert(table_of(CodeLog)).on_conflict_do_nothing(), rows)
    return ids


def _assert_chunks_exact(session: Session, code_id: uuid.UUID) -> None:
    keys = session.execute(
        select(CodeLog.created_at, CodeLog.seq, CodeLog.id).where(CodeLog.code_id == code_id)
        .order_by(CodeLog.created_at, CodeLog.seq, CodeLog.id)).all()
    chunks = session.execute(  # the first starts at -infinity, which Python cannot hold
        select(case((func.isfinite(CodeLogChunk.lo_at), CodeLogChunk.lo_at)),
               CodeLogChunk.lo_seq, CodeLogChunk.lo_id, CodeLogChunk.n)
        .where(CodeLogChunk.code_id == code_id)
        .order_by(CodeLogChunk.lo_at, CodeLogChunk.lo_seq, CodeLogChunk.lo_id)).all()
    if not keys:
        assert chunks == []
        return
    assert chunks[0][0] is None
    bounds = [(at, seq, id_) for at, seq, id_, _ in chunks[1:]]  # a log there may be gone
    counted = [0] * len(chunks)
    for key in keys:
        counted[sum(1 for bound in bounds if tuple(key) >= bound)] += 1
    assert [chunk[3] for chunk in chunks] == counted
    assert max(counted) <= 1000


def _assert_pages(session: Session, code_id: uuid.UUID) -> None:
    newest = [row for (row,) in session.execute(
        select(CodeLog.id).where(CodeLog.code_id == code_id)
        .order_by(CodeLog.created_at.desc(), CodeLog.seq.desc(), CodeLog.id.desc()))]
    last = -(-len(newest) // 20)
    for order, expected in (("desc", newest), ("asc", newest[::-1])):
        for page in sorted({1, 2, max(1, last // 2), max(1, last - 1), max(1, last), last + 1}):
            rows, total = log_store.page(session, code_id=code_id, page=page, order=order)
            assert total == len(newest)
            assert [row.id for row in rows] == expected[(page - 1) * 20:page * 20], (order, page)


@pytest.mark.parametrize("seed", [1, 2])
def test_chunks_stay_exact_and_pages_follow_time_through_any_writes(db: Database,
                                                                    seed: int) -> None:
    rnd = random.Random(seed)
    code = a_code(db)
    runs = [a_run(db, code).id for _ in range(14)]
    stored: list[uuid.UUID] = []
    with db.session() as session:
        for step in range(14):
            choice = rnd.random()
            if choice < 0.6 or step < 3:  # a run's logs, at any time (an import: older ones)
                at = BASE + timedelta(seconds=rnd.randint(-3000, 3000))
                again = rnd.sample(stored, min(len(stored), rnd.randint(0, 20)))
                stored += _write(session, code.id, runs[step], rnd.choice([1, 7, 300, 1400]),
                                 at, again)
            elif choice < 0.8:  # a run goes (its logs cascade)
                session.execute(delete(CodeRun).where(CodeRun.id == rnd.choice(runs[:step])))
            else:  # retention: the oldest logs go
                session.execute(delete(CodeLog).where(
                    CodeLog.code_id == code.id,
                    CodeLog.created_at < BASE + timedelta(seconds=rnd.randint(-3000, 0))))
            _assert_chunks_exact(session, code.id)
            _assert_pages(session, code.id)
        session.commit()


def _counts(session: Session) -> tuple[list, list]:
    chunks = select(CodeLogChunk.code_id, cast(CodeLogChunk.lo_at, Text), CodeLogChunk.lo_seq,
                    CodeLogChunk.lo_id, CodeLogChunk.n).order_by(CodeLogChunk.lo_at)
    return (list(session.execute(chunks)), list(session.execute(select(CodeLogCount.__table__))))


def test_an_insert_that_skips_every_row_changes_no_count(db: Database) -> None:
    code = a_code(db)
    run = a_run(db, code)
    with db.session() as session:
        stored = _write(session, code.id, run.id, 1500, BASE)
        before = _counts(session)
        assert len(before[0]) == 3  # the 1,500 logs are in chunks of 500
        _write(session, code.id, run.id, 0, BASE - timedelta(days=1), again=stored)
        assert _counts(session) == before
        session.commit()


def test_a_deleted_code_leaves_no_chunk_and_keys_stay_fixed(db: Database) -> None:
    code = a_code(db)
    run = a_run(db, code)
    with db.session() as session:
        (first, *_) = _write(session, code.id, run.id, 1200, BASE)
        session.commit()
    with pytest.raises(DBAPIError, match="fixed once stored"), db.session() as session:
        session.execute(update(CodeLog).where(CodeLog.id == first).values(
            created_at=BASE - timedelta(days=1)))
    with db.session() as session:
        session.execute(delete(CodeRun).where(CodeRun.id == run.id))
        assert session.execute(
            select(CodeLogChunk).where(CodeLogChunk.code_id == code.id)).all() == []
        session.commit()
