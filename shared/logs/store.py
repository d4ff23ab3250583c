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
from shared.orm import table_of

PAGE_SIZE = 20


def get(session: Session, log_id: EntityId) -> CodeLog | None:
    if log_id.uuid is not None:
        return session.get(CodeLog, log_id.uuid)
    return session.scalar(select(CodeLog).where(CodeLog.mongo_object_id == log_id.mongo_object_id))


def add_batch(session: Session, rows: list[dict[str, Any]]) -> None:
    """One INSERT for all of a run's logs (Core: the ORM's bulk path costs more CPU)."""
    if rows:
        session.connection().execute(insert(table_of(CodeLog)), rows)


def page(
    session: Session,
    *,
    run_id: uuid.UUID | None = None,
    code_id: uuid.UUID | None = None,
    page: int = 1,
    order: str = "desc",
) -> tuple[list[CodeLog], int]:
    """One page of logs, newest first (`order="asc"`: oldest first), and the total count.

    By run: call order reversed (a run has at most a few thousand logs; `seq` is the call
    order, time breaks ties between logs imported with equal positions). By code: a total
    order (time, position in the run, id); the total comes from `code_log_counts` and the
    page's ids from the index alone, read from whichever end of the list is nearer, so no
    page of even a very long list, in either order, reads more than half of it (and only
    from the index).
    """
    newest_first = order == "desc"
    if run_id is not None:
        where = CodeLog.run_id == run_id
        total = session.scalar(select(func.count()).select_from(CodeLog).where(where)) or 0
        columns = (CodeLog.seq, CodeLog.created_at, CodeLog.id)
        keys = tuple(key.desc() for key in columns) if newest_first else columns
        rows = session.scalars(
            select(CodeLog).where(where).order_by(*keys)
            .offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)
        )
        return list(rows), total
    total = session.scalar(select(CodeLogCount.total).where(CodeLogCount.code_id == code_id)) or 0
    skip = (page - 1) * PAGE_SIZE
    if skip >= total:
        return [], total
    size = min(PAGE_SIZE, total - skip)
    # Where the page sits counted from the newest log, and from the oldest.
    from_newest = skip if newest_first else total - skip - size
    from_oldest = total - from_newest - size
    oldest_keys = (CodeLog.created_at, CodeLog.seq, CodeLog.id)
    newest_keys = tuple(key.desc() for key in oldest_keys)
    ids = select(CodeLog.id).where(CodeLog.code_id == code_id)
    if from_newest <= from_oldest:
        ids = ids.order_by(*newest_keys).offset(from_newest).limit(size)
    else:
        ids = ids.order_by(*oldest_keys).offset(from_oldest).limit(size)
    rows = session.scalars(
        select(CodeLog).where(CodeLog.id.in_(ids.scalar_subquery()))
        .order_by(*(newest_keys if newest_first else oldest_keys))
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
    result = session.execute(delete(CodeLog).where(CodeLog.run_id.in_(run_ids)))
    return getattr(result, "rowcount", 0) or 0


def for_run(session: Session, run_id: uuid.UUID) -> list[dict[str, Any]]:
    """A run's logs in call order, as the rows the worker wrote (to archive them again)."""
    table = table_of(CodeLog)
    rows = session.connection().execute(
        select(table).where(table.c.run_id == run_id).order_by(table.c.seq)
    )
    return [dict(row._mapping) for row in rows]
