"""Queries on `codes`."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.codes.model import Code
from shared.ids import EntityId


def get(session: Session, code_id: EntityId) -> Code | None:
    if code_id.uuid is not None:
        return session.get(Code, code_id.uuid)
    return session.scalar(select(Code).where(Code.mongo_object_id == code_id.mongo_object_id))


def list_for_project(
    session: Session, project_uuid: uuid.UUID, code_type: str | None = None
) -> list[Code]:
    query = select(Code).where(Code.project_uuid == project_uuid)
    if code_type:
        query = query.where(Code.type == code_type)
    return list(session.scalars(query.order_by(Code.created_at, Code.id)))


def add(session: Session, code: Code) -> Code:
    session.add(code)
    session.flush()
    return code


def delete(session: Session, code: Code) -> None:
    session.delete(code)
    session.flush()
