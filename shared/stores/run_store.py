"""Queries on `coderuns`, including the atomic claim that makes execution exactly-once."""

from __future__ import annotations

import functools
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
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
    """`claim`, returning the run and its code in the same statement (no reads after it).

    The worker's hot path: a prepared Core statement (the ORM's bulk-update machinery cost
    more CPU than the query); the objects returned are detached copies of the rows."""
    row = session.connection().execute(
        _claim_statement(), {"claimed_run_id": run_id, "claiming_worker": worker}
    ).first()
    if row is None:
        return None
    values = row._mapping
    run = CodeRun(**{c.name: values["run_" + c.name] for c in CodeRun.__table__.c})
    code = Code(**{c.name: values["code_" + c.name] for c in Code.__table__.c})
    return run, code


@functools.cache
def _claim_statement() -> Any:
    runs, codes = CodeRun.__table__, Code.__table__
    return (
        update(runs)
        .where(runs.c.id == bindparam("claimed_run_id"), runs.c.status == QUEUED,
               codes.c.id == runs.c.code_id)
        .values(status=STARTED, started_at=func.now(), worker=bindparam("claiming_worker"),
                updated_at=func.now())
        .returning(*(c.label("run_" + c.name) for c in runs.c),
                   *(c.label("code_" + c.name) for c in codes.c))
    )


def finish(
    session: Session, run_id: uuid.UUID, status: str, from_status: str = STARTED, **values: Any
) -> bool:
    """Move a run from `from_status` to its final status; False if it was no longer there."""
    params = {f"set_{name}": value for name, value in values.items()}
    finished = session.connection().execute(
        _finish_statement(tuple(sorted(values))),
        {"finished_run_id": run_id, "from_status": from_status, "final_status": status,
         **params},
    ).first()
    return finished is not None


@functools.cache
def _finish_statement(names: tuple[str, ...]) -> Any:
    """One prepared statement per set of columns written (a handful exist)."""
    runs = CodeRun.__table__
    return (
        update(runs)
        .where(runs.c.id == bindparam("finished_run_id"),
               runs.c.status == bindparam("from_status"))
        .values(status=bindparam("final_status"), finished_at=func.now(), updated_at=func.now(),
                **{name: bindparam(f"set_{name}", type_=runs.c[name].type) for name in names})
        .returning(runs.c.id)
    )
