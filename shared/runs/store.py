"""Queries on `coderuns`, including the atomic claim that makes execution exactly-once."""

from __future__ import annotations

import functools
import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, func, select, text, update
from sqlalchemy import delete as delete_
from sqlalchemy.orm import Session

from shared.codes.model import Code
from shared.ids import EntityId
from shared.runs.model import QUEUED, STARTED, CodeRun


def get(session: Session, run_id: EntityId) -> CodeRun | None:
    if run_id.uuid is not None:
        return session.get(CodeRun, run_id.uuid)
    return session.scalar(select(CodeRun).where(CodeRun.mongo_object_id == run_id.mongo_object_id))


def _for_code(
    query: Select,
    code_id: uuid.UUID,
    after: datetime | None,
    before: datetime | None,
    status: str | None,
) -> Select:
    query = query.where(CodeRun.code_id == code_id)
    if after is not None:
        query = query.where(CodeRun.created_at >= after)
    if before is not None:
        query = query.where(CodeRun.created_at <= before)
    if status is not None:
        query = query.where(CodeRun.status == status)
    return query


def list_for_code(
    session: Session,
    code_id: uuid.UUID,
    after: datetime | None = None,
    before: datetime | None = None,
    status: str | None = None,
    offset: int = 0,
    limit: int = 1000,
) -> list[CodeRun]:
    query = _for_code(select(CodeRun), code_id, after, before, status)
    query = query.order_by(CodeRun.created_at.desc(), CodeRun.id.desc())
    return list(session.scalars(query.offset(offset).limit(limit)))


def count_for_code(
    session: Session,
    code_id: uuid.UUID,
    after: datetime | None = None,
    before: datetime | None = None,
    status: str | None = None,
) -> int:
    query = _for_code(select(func.count()).select_from(CodeRun), code_id, after, before, status)
    return session.scalar(query) or 0


def add(session: Session, run: CodeRun) -> CodeRun:
    session.add(run)
    session.flush()
    return run


def claim_with_code(
    session: Session, run_id: uuid.UUID, worker: str
) -> tuple[CodeRun, Code] | None:
    """Move a run queued → started and return it with its code, in one statement; exactly
    one caller ever gets them for a given run (None: claimed already, ended, or deleted).

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


_APPEND_CALLBACK_ATTEMPT = text(
    """
    UPDATE coderuns
    SET callback = jsonb_set(
            jsonb_set(callback, '{attempts}',
                      COALESCE(callback -> 'attempts', '[]'::jsonb)
                      || jsonb_build_array(CAST(:attempt AS jsonb))),
            '{status}', to_jsonb(CAST(:status AS text)))
    WHERE id = :run_id AND callback ->> 'status' = 'pending'
    RETURNING id
    """
)


def record_callback_attempt(
    session: Session, run_id: uuid.UUID, attempt: dict[str, Any], status: str
) -> bool:
    """Append one delivery attempt and set the callback's status, in one statement; False
    when the callback is no longer pending (delivered or given up by an earlier attempt)."""
    row = session.execute(
        _APPEND_CALLBACK_ATTEMPT,
        {"run_id": run_id, "attempt": json.dumps(attempt), "status": status},
    ).first()
    return row is not None


def project_of_queued(session: Session, run_id: uuid.UUID) -> uuid.UUID | None:
    """The project of a run still waiting to start; None if it started, ended or is gone."""
    return session.scalar(
        select(Code.project_uuid)
        .join(CodeRun, CodeRun.code_id == Code.id)
        .where(CodeRun.id == run_id, CodeRun.status == QUEUED)
    )


# --- housekeeping -----------------------------------------------------------------------


def created_before(session: Session, cutoff: datetime, limit: int) -> list[uuid.UUID]:
    """Ids of up to `limit` runs created before `cutoff`, oldest first (index on created_at)."""
    query = (
        select(CodeRun.id).where(CodeRun.created_at < cutoff)
        .order_by(CodeRun.created_at).limit(limit)
    )
    return list(session.scalars(query))


def delete(session: Session, run_ids: list[uuid.UUID]) -> int:
    if not run_ids:
        return 0
    return session.execute(delete_(CodeRun).where(CodeRun.id.in_(run_ids))).rowcount or 0


def stuck_started(
    session: Session, margin_seconds: int, limit: int
) -> list[tuple[uuid.UUID, uuid.UUID, str | None, bool]]:
    """Runs `started` longer than their code's timeout plus `margin_seconds`: whoever
    claimed them is gone. (run id, code id, worker, wants a callback), oldest first."""
    overdue = CodeRun.started_at < func.now() - func.make_interval(
        0, 0, 0, 0, 0, 0, Code.timeout + margin_seconds
    )
    query = (
        select(CodeRun.id, CodeRun.code_id, CodeRun.worker,
               CodeRun.callback.isnot(None).label("wants_callback"))
        .join(Code, Code.id == CodeRun.code_id)
        .where(CodeRun.status == STARTED, overdue)
        .order_by(CodeRun.started_at).limit(limit)
    )
    return [(row.id, row.code_id, row.worker, row.wants_callback)
            for row in session.execute(query)]
