"""Queries on `codelogs`, the PostgreSQL index of every run's logs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from shared.ids import EntityId
from shared.logs.count import CodeLogCount
from shared.logs.model import CodeLog

PAGE_SIZE = 20


def get(session: Session, log_id: EntityId) -> CodeLog | None:
    if log_id.uuid is not None:
        return session.get(CodeLog, log_id.uuid)
    return session.scalar(select(CodeLog).where(CodeLog.mongo_object_id == log_id.mongo_object_id))


def add_batch(session: Session, rows: list[dict[str, Any]]) -> None:
    """One INSERT for all of a run's logs (Core: the ORM's bulk path costs more CPU)."""
    if rows:
        session.connection().execute(insert(CodeLog.__table__), rows)


def page(
    session: Session,
    *,
    run_id: uuid.UUID | None = None,
    code_id: uuid.UUID | None = None,
    page: int = 1,
) -> tuple[list[CodeLog], int]:
    """One page of logs and the total count.

    By run: call order (a run has at most a few thousand). By code: newest first, in a total
    order (time, position in the run, id); the total comes from `code_log_counts` and the
    page's ids from the index alone, read from whichever end of the list is nearer, so no
    page of even a very long list reads more than half of it (and only from the index).
    """
    if run_id is not None:
        where = CodeLog.run_id == run_id
        total = session.scalar(select(func.count()).select_from(CodeLog).where(where)) or 0
        rows = session.scalars(
            select(CodeLog).where(where).order_by(CodeLog.seq)
            .offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)
        )
        return list(rows), total
    total = session.scalar(select(CodeLogCount.total).where(CodeLogCount.code_id == code_id)) or 0
    skip = (page - 1) * PAGE_SIZE
    if skip >= total:
        return [], total
    newest_first = (CodeLog.created_at.desc(), CodeLog.seq.desc(), CodeLog.id.desc())
    ids = select(CodeLog.id).where(CodeLog.code_id == code_id)
    if skip <= total // 2:
        ids = ids.order_by(*newest_first).offset(skip).limit(PAGE_SIZE)
    else:  # nearer the oldest end: count from there
        size = min(PAGE_SIZE, total - skip)
        ids = ids.order_by(CodeLog.created_at, CodeLog.seq, CodeLog.id)
        ids = ids.offset(total - skip - size).limit(size)
    rows = session.scalars(
        select(CodeLog).where(CodeLog.id.in_(ids.scalar_subquery())).order_by(*newest_first)
    )
    return list(rows), total


# --- housekeeping -----------------------------------------------------------------------


def archive_keys_of(
    session: Session, run_ids: list[uuid.UUID]
) -> list[tuple[uuid.UUID, uuid.UUID, datetime]]:
    """(run id, code id, time of the first log) per run that has logs: what names a run's
    archive object (`LogArchive.key_for`)."""
    if not run_ids:
        return []
    query = select(CodeLog.run_id, CodeLog.code_id, CodeLog.created_at).where(
        CodeLog.run_id.in_(run_ids), CodeLog.seq == 0
    )
    return [(row.run_id, row.code_id, row.created_at) for row in session.execute(query)]


def delete_for_runs(session: Session, run_ids: list[uuid.UUID]) -> int:
    if not run_ids:
        return 0
    return session.execute(delete(CodeLog).where(CodeLog.run_id.in_(run_ids))).rowcount or 0
