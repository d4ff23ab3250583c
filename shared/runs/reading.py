"""Reading runs: one by id (UUID or legacy ObjectID), a code's runs page by page."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select

from shared.codes import store as code_store
from shared.codes.model import Code
from shared.db import Database
from shared.errors import NotFound
from shared.ids import EntityId
from shared.runs import store as run_store
from shared.runs.model import CodeRun
from shared.runs.statuses import FINISHED


def get(db: Database, run_id: EntityId) -> CodeRun:
    with db.session() as session:
        run = run_store.get(session, run_id)
    if run is None:
        raise NotFound("run not found")
    return run


def get_with_code(db: Database, run_id: EntityId) -> tuple[CodeRun, Code | None]:
    """The run and its code (None when the code was deleted)."""
    with db.session() as session:
        run = run_store.get(session, run_id)
        if run is None:
            raise NotFound("run not found")
        return run, session.get(Code, run.code_id)


def reread(db: Database, run_id: uuid.UUID) -> CodeRun | None:
    """The run as stored now (after a wait)."""
    with db.session(one_statement=True) as session:
        return session.get(CodeRun, run_id)


def code_of_runs(db: Database, reference: EntityId) -> tuple[Code | None, uuid.UUID]:
    """The code whose runs are asked for (by UUID or ObjectID) and its id. A code that was
    deleted while runs adopted from the Go service still point at it gives (None, its id);
    NotFound when neither exists."""
    with db.session() as session:
        code = code_store.get(session, reference)
        if code is not None:
            return code, code.id
        orphaned = run_store.orphaned_code_id(session, reference)
    if orphaned is None:
        raise NotFound("code not found")
    return None, orphaned


def has_ended(db: Database, run_id: uuid.UUID) -> bool:
    """Finished, or gone with its code: nothing more to wait for."""
    with db.session(one_statement=True) as session:
        status = session.scalar(select(CodeRun.status).where(CodeRun.id == run_id))
    return status is None or status in FINISHED


def page_for_code(
    db: Database,
    code_id: uuid.UUID,
    *,
    after: datetime | None,
    before: datetime | None,
    status: str | None,
    offset: int,
    limit: int,
    order: str = "desc",
) -> tuple[list[CodeRun], int]:
    """A page of a code's runs, newest first (`order="asc"`: oldest first), and how many
    there are in all."""
    with db.session() as session:
        total = run_store.count_for_code(session, code_id, after, before, status)
        runs = run_store.list_for_code(session, code_id, after, before, status, offset=offset,
                                       limit=limit, order=order)
    return runs, total
