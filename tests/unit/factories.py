"""Rows for the fast tests, written through the stores (inside the test's transaction)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from shared.codes import store as code_store
from shared.codes.model import Code
from shared.db import Database
from shared.runs import store as run_store
from shared.runs.model import CodeRun


def a_code(db: Database, **values: object) -> Code:
    fields = {"name": "c", "type": "endpoint", "language": "python",
              "project_uuid": uuid.uuid4(), "source": "def Run(engine): pass", **values}
    with db.session() as session:
        code = code_store.add(session, Code(**fields))
        session.commit()
    return code


def a_run(db: Database, code: Code, status: str = "queued", callback: str | None = None,
          started_ago: float | None = None, lease_left: float | None = None) -> CodeRun:
    with db.session() as session:
        run = run_store.add(session, CodeRun(
            id=uuid.uuid4(), code_id=code.id, status=status, params={}, body="", headers={},
            extra={}, result="",
            callback={"url": callback, "status": "pending", "attempts": []} if callback else None,
        ))
        if started_ago is not None:
            session.execute(update(CodeRun).where(CodeRun.id == run.id).values(
                started_at=datetime.now(UTC) - timedelta(seconds=started_ago)))
        if lease_left is not None:
            session.execute(update(CodeRun).where(CodeRun.id == run.id).values(
                lease_expires_at=datetime.now(UTC) + timedelta(seconds=lease_left)))
        session.commit()
    return run


def reread(db: Database, run_id: uuid.UUID) -> CodeRun:
    with db.session() as session:
        return session.get(CodeRun, run_id)
