"""Queries on `projects`."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.access.project import Project


def get_by_uuid(session: Session, project_uuid: uuid.UUID) -> Project | None:
    return session.scalar(select(Project).where(Project.uuid == project_uuid))


def add_if_missing(
    session: Session, project_uuid: uuid.UUID, name: str, authorizations: list[dict[str, Any]]
) -> bool:
    """Insert unless a project with this uuid exists; True when a row was inserted."""
    inserted = session.execute(
        insert(Project)
        .values(id=uuid.uuid4(), uuid=project_uuid, name=name, authorizations=authorizations)
        .on_conflict_do_nothing(index_elements=[Project.uuid])
        .returning(Project.id)
    ).first()
    return inserted is not None
