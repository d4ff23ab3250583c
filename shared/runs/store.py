"""Queries on `coderuns`, including the atomic claim that makes execution exactly-once."""

from __future__ import annotations

import functools
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    bindparam,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy import delete as delete_
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from shared.after_commit.outbox import OutboxEntry
from shared.after_commit.steps import SWEEP_GRACE, Step
from shared.codes.model import TIMEOUT_MAX, Code
from shared.ids import EntityId
from shared.orm import detached, table_of
from shared.runs.model import CodeRun
from shared.runs.statuses import RunStatus


def get(session: Session, run_id: EntityId) -> CodeRun | None:
    if run_id.uuid is not None:
        return session.get(CodeRun, run_id.uuid)
    return session.scalar(select(CodeRun).where(CodeRun.mongo_object_id == run_id.mongo_object_id))


def orphaned_code_id(session: Session, code_ref: EntityId) -> uuid.UUID | None:
    """The id of a deleted code that runs still point at (runs adopted from the Go service,
    which kept them; ours go with their code), by its UUID or its legacy ObjectID."""
    if code_ref.uuid is not None:
        where = CodeRun.code_id == code_ref.uuid
    else:
        where = CodeRun.code_mongo_id == code_ref.mongo_object_id
    return session.scalar(select(CodeRun.code_id).where(where).limit(1))


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
    order: str = "desc",
) -> list[CodeRun]:
    """Newest first (`order="asc"`: oldest first)."""
    query = _for_code(select(CodeRun), code_id, after, before, status)
    columns = (CodeRun.created_at, CodeRun.id)
    keys = tuple(key.desc() for key in columns) if order == "desc" else columns
    return list(session.scalars(query.order_by(*keys).offset(offset).limit(limit)))


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


def add_with_outbox(connection: Connection, run: CodeRun, step: Step) -> int:
    """Insert a new run and the outbox entry of the step that follows it in one statement
    (Core, no ORM flush, built once: the API's CPU per run); fills the row's server-made
    values into `run` and returns the entry's id."""
    statement, keys = _submission_statement()
    params = {f"run_{key}": getattr(run, key) for key in keys}
    params.update(step_kind=step.kind.value, step_args=step.args)
    row = connection.execute(statement, params).one()
    run.created_at = run.updated_at = row[1]
    run.executions = row[2]
    return int(row[0])


@functools.cache
def _submission_statement() -> tuple[Any, tuple[str, ...]]:
    """The statement of `add_with_outbox` and the run's attributes it takes: every column
    without a server default, each as a bound parameter (building and caching-keying the
    statement anew cost a third of the API's CPU per sync call)."""
    runs, entries = table_of(CodeRun), table_of(OutboxEntry)
    keys = tuple(column.key for column in runs.c if column.server_default is None)
    new_run = (insert(runs).values({key: bindparam(f"run_{key}", type_=runs.c[key].type)
                                    for key in keys})
               .returning(runs.c.id, runs.c.created_at, runs.c.updated_at, runs.c.executions)
               .cte("new_run"))
    statement = (
        _entry_insert(new_run, bindparam("step_args", type_=JSONB), select_from=new_run)
        .add_cte(new_run)  # top level: PostgreSQL wants a writing WITH there
        .returning(entries.c.id, select(new_run.c.created_at).scalar_subquery(),
                   select(new_run.c.executions).scalar_subquery())
    )
    return statement, keys


def _entry_insert(new_run: Any, args: Any, select_from: Any) -> Any:
    """The outbox entry of the step that follows a new run (`new_run`: its insert's CTE),
    due for the sweeper after the grace; both submission statements end with it."""
    entries = table_of(OutboxEntry)
    return insert(entries).from_select(["kind", "run_id", "args", "due_at", "attempts"], select(
        bindparam("step_kind", type_=entries.c.kind.type), new_run.c.id, args,
        func.now() + SWEEP_GRACE, literal(0),
    ).select_from(select_from), include_defaults=False)


def add_for_code(
    connection: Connection, run: CodeRun, code_ref: EntityId, step_kind: str,
    code_type: str | None = None,
) -> tuple[Code, int] | None:
    """A sync call's submission: read the code `code_ref` names (of type `code_type`, if
    given) and insert `run` of it with its outbox entry, in one statement (one round trip
    fewer than reading the code first). Returns the code, a detached copy of its row, and
    the entry's id, and fills the run's code and server-made values; None, with nothing
    written, when there is no such code. The entry's arguments are the run's language."""
    column = "id" if code_ref.uuid is not None else "mongo_object_id"
    statement, keys = _submission_for_code_statement(column, code_type is not None)
    params = {f"run_{key}": getattr(run, key) for key in keys}
    params.update(code_ref=code_ref.uuid or code_ref.mongo_object_id, code_type=code_type,
                  step_kind=step_kind)
    row = connection.execute(statement, params).first()
    if row is None:
        return None
    code = detached(Code, row, "code_")
    run.code_id, run.code_mongo_id = code.id, code.mongo_object_id
    run.created_at = run.updated_at = row.run_created_at
    run.executions = row.run_executions
    return code, int(row.entry_id)


#: The run's columns a sync call's submission takes from its code's row.
_FROM_CODE = {"code_id": "id", "code_mongo_id": "mongo_object_id"}


@functools.cache
def _submission_for_code_statement(column: str, typed: bool) -> tuple[Any, tuple[str, ...]]:
    """`add_for_code`'s statement: the code's row (a CTE), the run inserted from it, the
    outbox entry inserted from both; no code, no row inserted."""
    runs, codes, entries = table_of(CodeRun), table_of(Code), table_of(OutboxEntry)
    keys = tuple(column.key for column in runs.c
                 if column.server_default is None and column.key not in _FROM_CODE)
    wanted = select(codes).where(codes.c[column] == bindparam("code_ref"))
    if typed:
        wanted = wanted.where(codes.c.type == bindparam("code_type"))
    code = wanted.cte("code")
    new_run = (
        insert(runs).from_select([*keys, *_FROM_CODE], select(
            *(bindparam(f"run_{key}", type_=runs.c[key].type) for key in keys),
            *(code.c[name] for name in _FROM_CODE.values()),
        ).select_from(code), include_defaults=False)
        .returning(runs.c.id, runs.c.created_at, runs.c.executions)
        .cte("new_run")
    )
    entry = (
        _entry_insert(new_run, func.jsonb_build_object("language", code.c.language),
                      select_from=new_run.join(code, true()))
        .returning(entries.c.id)
        .cte("entry")
    )
    statement = select(
        *(c.label("code_" + c.name) for c in code.c),
        entry.c.id.label("entry_id"), new_run.c.created_at.label("run_created_at"),
        new_run.c.executions.label("run_executions"),
    ).select_from(code).join(new_run, true()).join(entry, true())
    return statement, keys


def claim_with_code(
    connection: Connection, run_id: uuid.UUID, worker: str, lease_seconds: float
) -> tuple[CodeRun, Code] | None:
    """Move a run queued → started and return it with its code, in one statement; exactly
    one caller ever gets them for a given run (None: claimed already, ended, or deleted).

    The worker's hot path: a prepared Core statement (the ORM's bulk-update machinery cost
    more CPU than the query); the objects returned are detached copies of the rows."""
    row = connection.execute(
        _claim_statement(),
        {"claimed_run_id": run_id, "claiming_worker": worker, "lease_seconds": lease_seconds},
    ).first()
    if row is None:
        return None
    return detached(CodeRun, row, "run_"), detached(Code, row, "code_")


@functools.cache
def _claim_statement() -> Any:
    runs, codes = table_of(CodeRun), table_of(Code)
    return (
        update(runs)
        .where(runs.c.id == bindparam("claimed_run_id"), runs.c.status == RunStatus.QUEUED,
               codes.c.id == runs.c.code_id)
        .values(status=RunStatus.STARTED, started_at=func.now(),
                worker=bindparam("claiming_worker"), updated_at=func.now(),
                lease_expires_at=func.now() + _seconds(bindparam("lease_seconds")),
                executions=runs.c.executions + 1)
        .returning(*(c.label("run_" + c.name) for c in runs.c),
                   *(c.label("code_" + c.name) for c in codes.c))
    )


@dataclass(frozen=True)
class Finished:
    """A run this call ended (it was still in `from_status`)."""

    wants_callback: bool
    #: The run's row as the same UPDATE left it (`RETURNING`): what the completion signal
    #: carries to the waiting request, which then has no row to read.
    record: dict[str, Any] = field(default_factory=dict, compare=False)


def finish(
    connection: Connection, run_id: uuid.UUID, status: str, from_status: str = RunStatus.STARTED,
    **values: Any,
) -> Finished | None:
    """Move a run from `from_status` to its final status; None if it was no longer there."""
    params = {f"set_{name}": value for name, value in values.items()}
    finished = connection.execute(
        _finish_statement(tuple(sorted(values))),
        {"finished_run_id": run_id, "from_status": from_status, "final_status": status,
         **params},
    ).first()
    if finished is None:
        return None
    record = dict(finished._mapping)
    return Finished(wants_callback=bool(record.pop("wants_callback")), record=record)


def _wants_callback(callback: Any) -> Any:
    """A callback object (older rows may hold a JSON `null` for "none")."""
    return func.coalesce(func.jsonb_typeof(callback) == "object", False)


@functools.cache
def _finish_statement(names: tuple[str, ...]) -> Any:
    """One prepared statement per set of columns written (a handful exist)."""
    runs = table_of(CodeRun)
    return (
        update(runs)
        .where(runs.c.id == bindparam("finished_run_id"),
               runs.c.status == bindparam("from_status"))
        .values(status=bindparam("final_status"), finished_at=func.now(), updated_at=func.now(),
                **{name: bindparam(f"set_{name}", type_=runs.c[name].type) for name in names})
        .returning(*runs.c, _wants_callback(runs.c.callback).label("wants_callback"))
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


def unfinished_of_code(session: Session, code_id: uuid.UUID) -> list[tuple[uuid.UUID, str]]:
    """(run id, status) of a code's runs still queued or started."""
    query = select(CodeRun.id, CodeRun.status).where(
        CodeRun.code_id == code_id, CodeRun.status.in_([RunStatus.QUEUED, RunStatus.STARTED])
    )
    return [(row.id, row.status) for row in session.execute(query)]


def project_of_queued(session: Session, run_id: uuid.UUID) -> uuid.UUID | None:
    """The project of a run still waiting to start; None if it started, ended or is gone."""
    return session.scalar(
        select(Code.project_uuid)
        .join(CodeRun, CodeRun.code_id == Code.id)
        .where(CodeRun.id == run_id, CodeRun.status == RunStatus.QUEUED)
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
    result = session.execute(delete_(CodeRun).where(CodeRun.id.in_(run_ids)))
    return getattr(result, "rowcount", 0) or 0


def renew_leases(connection: Connection, run_ids: list[uuid.UUID], seconds: float) -> None:
    """Extend the leases of runs this worker is executing (one statement for all)."""
    if run_ids:
        connection.execute(
            update(table_of(CodeRun))
            .where(CodeRun.id.in_(run_ids), CodeRun.status == RunStatus.STARTED)
            .values(lease_expires_at=func.now() + _seconds(seconds))
        )


def stuck_started(
    session: Session, margin_seconds: int, limit: int
) -> list[tuple[uuid.UUID, uuid.UUID, str | None, bool]]:
    """Runs `started` whose worker is gone: their lease ran out, or (rows without a lease,
    such as the old service's) they are older than their code's timeout plus
    `margin_seconds`. (run id, code id, worker, wants a callback), oldest first."""
    # An outer join: a run adopted from the Go service may outlive its code (orphan runs);
    # it is given the longest timeout a code may have.
    timeout = func.coalesce(Code.timeout, TIMEOUT_MAX)
    overdue = func.coalesce(CodeRun.started_at, CodeRun.created_at) < func.now() - _seconds(
        timeout + margin_seconds
    )
    lease_lost = CodeRun.lease_expires_at < func.now()
    query = (
        select(CodeRun.id, CodeRun.code_id, CodeRun.worker,
               _wants_callback(CodeRun.callback).label("wants_callback"))
        .outerjoin(Code, Code.id == CodeRun.code_id)
        .where(CodeRun.status == RunStatus.STARTED, or_(lease_lost, overdue))
        .order_by(CodeRun.started_at).limit(limit)
    )
    return [(row.id, row.code_id, row.worker, row.wants_callback)
            for row in session.execute(query)]


def _seconds(value: Any) -> Any:
    return func.make_interval(0, 0, 0, 0, 0, 0, value)
