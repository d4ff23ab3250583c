"""Queries on `codelogs`, the PostgreSQL index of every run's logs."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from shared.ids import EntityId
from shared.models import CodeLog

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

    By run: call order. By code: newest first (the index is scanned backwards).
    """
    if run_id is not None:
        where = CodeLog.run_id == run_id
        order = (CodeLog.seq,)
    else:
        where = CodeLog.code_id == code_id
        order = (CodeLog.created_at.desc(), CodeLog.seq.desc())
    total = session.scalar(select(func.count()).select_from(CodeLog).where(where)) or 0
    rows = session.scalars(
        select(CodeLog).where(where).order_by(*order).offset((page - 1) * PAGE_SIZE)
        .limit(PAGE_SIZE)
    )
    return list(rows), total
