"""Queries on `codes`."""

from __future__ import annotations

import functools
import uuid
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from shared.codes.model import Code
from shared.ids import EntityId
from shared.orm import detached, table_of


def get(session: Session, code_id: EntityId) -> Code | None:
    if code_id.uuid is not None:
        return session.get(Code, code_id.uuid)
    return session.scalar(select(Code).where(Code.mongo_object_id == code_id.mongo_object_id))


def read(session: Session, code_id: EntityId) -> Code | None:
    """The code as a detached copy of its row, for reading only: one prepared Core
    statement (every call of a code reads it; the ORM's identity map and loading cost more
    CPU than the query)."""
    column = "id" if code_id.uuid is not None else "mongo_object_id"
    row = session.connection().execute(
        _read_statement(column), {"wanted": code_id.uuid or code_id.mongo_object_id}
    ).first()
    return detached(Code, row) if row is not None else None


@functools.cache
def _read_statement(column: str) -> Any:
    codes = table_of(Code)
    return select(codes).where(codes.c[column] == bindparam("wanted"))


def list_for_project(
    session: Session, project_uuid: uuid.UUID, code_type: str | None = None, order: str = "desc"
) -> list[Code]:
    """Newest first (`order="asc"`: oldest first)."""
    query = select(Code).where(Code.project_uuid == project_uuid)
    if code_type:
        query = query.where(Code.type == code_type)
    columns = (Code.created_at, Code.id)
    keys = tuple(key.desc() for key in columns) if order == "desc" else columns
    return list(session.scalars(query.order_by(*keys)))


def add(session: Session, code: Code) -> Code:
    session.add(code)
    session.flush()
    return code


def delete(session: Session, code: Code) -> None:
    session.delete(code)
    session.flush()
