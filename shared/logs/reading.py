"""Reading logs from the PostgreSQL index: one by id, a run's or a code's, 20 a page."""

from __future__ import annotations

import uuid

from shared.db import Database
from shared.errors import NotFound
from shared.ids import EntityId
from shared.logs import store as log_store
from shared.logs.model import CodeLog

PAGE_SIZE = log_store.PAGE_SIZE


def get(db: Database, log_id: EntityId) -> CodeLog:
    with db.session() as session:
        entry = log_store.get(session, log_id)
    if entry is None:
        raise NotFound("log not found")
    return entry


def page_for_run(
    db: Database, run_id: uuid.UUID, page: int, order: str = "desc"
) -> tuple[list[CodeLog], int]:
    with db.session() as session:
        return log_store.page(session, run_id=run_id, page=page, order=order)


def page_for_code(
    db: Database, code_id: uuid.UUID, page: int, order: str = "desc"
) -> tuple[list[CodeLog], int]:
    with db.session() as session:
        return log_store.page(session, code_id=code_id, page=page, order=order)
