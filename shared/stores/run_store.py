"""Queries on `coderuns`, including the atomic claim that makes execution exactly-once."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from shared.ids import EntityId
from shared.models import Code, CodeRun
from shared.models.coderun import QUEUED, STARTED


def get(session: Session, run_id: EntityId) -> CodeRun | None:
    if run_id.uuid is not None:
        return session.get(CodeRun, run_id.uuid)
    return session.scalar(select(CodeRun).where(CodeRun.mongo_object_id == run_id.mongo_object_id))


def list_for_code(
    session: Session,
    code_id: uuid.UUID,
    after: datetime | None = None,
    before: datetime | None = None,
    limit: int = 1000,
) -> list[CodeRun]:
    query = select(CodeRun).where(CodeRun.code_id == code_id)
    if after is not None:
        query = query.where(CodeRun.created_at >= after)
    if before is not None:
        query = query.where(CodeRun.created_at <= before)
    query = query.order_by(CodeRun.created_at.desc(), CodeRun.id.desc()).limit(limit)
    return list(session.scalars(query))


def add(session: Session, run: CodeRun) -> CodeRun:
    session.add(run)
    session.flush()
    return run


def claim(session: Session, run_id: uuid.UUID, worker: str) -> bool:
    """Move a run queued → started. Exactly one caller ever gets True for a given run."""
    claimed = session.execute(
        update(CodeRun)
        .where(CodeRun.id == run_id, CodeRun.status == QUEUED)
        .values(status=STARTED, started_at=func.now(), worker=worker, updated_at=func.now())
        .returning(CodeRun.id)
    ).first()
    return claimed is not None


def claim_with_code(
    session: Session, run_id: uuid.UUID, worker: str
) -> tuple[CodeRun, Code] | None:
    """`claim`, returning the run and its code in the same statement (no reads after it)."""
    row = session.execute(
        update(CodeRun)
        .where(CodeRun.id == run_id, CodeRun.status == QUEUED, Code.id == CodeRun.code_id)
        .values(status=STARTED, started_at=func.now(), worker=worker, updated_at=func.now())
        .returning(CodeRun, Code)
    ).first()
    return (row[0], row[1]) if row is not None else None


def finish(
    session: Session, run_id: uuid.UUID, status: str, from_status: str = STARTED, **values: Any
) -> bool:
    """Move a run from `from_status` to its final status; False if it was no longer there."""
    finished = session.execute(
        update(CodeRun)
        .where(CodeRun.id == run_id, CodeRun.status == from_status)
        .values(status=status, finished_at=func.now(), updated_at=func.now(), **values)
        .returning(CodeRun.id)
    ).first()
    return finished is not None
