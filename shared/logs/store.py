"""Queries on `codelogs`, the PostgreSQL index of every run's logs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, bindparam, delete, func, insert, literal, select, tuple_
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from shared.ids import EntityId
from shared.logs import chunks as log_chunks
from shared.logs.model import CodeLog
from shared.orm import table_of

PAGE_SIZE = 20


def get(session: Session, log_id: EntityId) -> CodeLog | None:
    if log_id.uuid is not None:
        return session.get(CodeLog, log_id.uuid)
    return session.scalar(select(CodeLog).where(CodeLog.mongo_object_id == log_id.mongo_object_id))


# What the worker and the stuck-run reaper write of a log (the other columns keep defaults).
_BATCH_COLUMNS = ("id", "run_id", "code_id", "type", "content", "seq", "created_at",
                  "updated_at")


def _batch_insert() -> Insert:
    table = table_of(CodeLog)
    arrays = [bindparam(name, type_=postgresql.ARRAY(table.c[name].type))
              for name in _BATCH_COLUMNS]
    source = func.unnest(*arrays).table_valued(*_BATCH_COLUMNS).render_derived()
    return insert(table).from_select(_BATCH_COLUMNS, select(*source.c))


_BATCH_INSERT = _batch_insert()  # built once: its compiled form is cached


def add_batch(session: Session, rows: list[dict[str, Any]]) -> None:
    """One INSERT for all of a run's logs: each column as one array, unnested. A list of
    rows would be an executemany, one statement per log, each firing the statement triggers
    that count the code's logs (`code_log_counts`, `code_log_chunks`) and leaving a row
    version of the count behind per log."""
    if rows:
        session.connection().execute(
            _BATCH_INSERT, {name: [row[name] for row in rows] for name in _BATCH_COLUMNS})


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
    order (time, position in the run, id), whatever order the logs were stored in; the
    code's chunks (`shared.logs.chunks`) give the total and the chunk the page starts in,
    and the page's ids come from the index alone, at most one chunk's worth (~1,000 index
    entries) past the chunk's first key: the same cost at any page of any list.
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
    if code_id is None:
        raise ValueError("a page of logs is a run's or a code's")
    skip = (page - 1) * PAGE_SIZE
    start = log_chunks.locate(session, code_id, skip=skip, size=PAGE_SIZE,
                              newest_first=newest_first)
    total = start.total
    if skip >= total:
        return [], total
    size = min(PAGE_SIZE, total - skip)
    oldest_keys = (CodeLog.created_at, CodeLog.seq, CodeLog.id)
    ids = select(CodeLog.id).where(CodeLog.code_id == code_id)
    if start.key is not None:  # the index from the chunk's first key on (a row comparison)
        at, seq, log_id = start.key
        ids = ids.where(tuple_(*oldest_keys) >= tuple_(
            literal(at, CodeLog.created_at.type), literal(seq, CodeLog.seq.type),
            literal(log_id, CodeLog.id.type)))
    ids = ids.order_by(*oldest_keys).offset(start.offset).limit(size)
    page_keys = tuple(key.desc() for key in oldest_keys) if newest_first else oldest_keys
    rows = session.scalars(
        select(CodeLog).where(CodeLog.id.in_(ids.scalar_subquery())).order_by(*page_keys)
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
