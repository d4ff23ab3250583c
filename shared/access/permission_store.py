"""Queries on `user_permissions`. Emails compare case-insensitively: the identity provider
and the platform's events do not agree on case, and legacy rows keep theirs."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.access.permission import UserPermission


def find(session: Session, project_uuid: uuid.UUID, email: str) -> UserPermission | None:
    return session.scalar(
        select(UserPermission)
        .where(
            UserPermission.project_uuid == project_uuid,
            func.lower(UserPermission.email) == email.lower(),
        )
        .order_by(UserPermission.created_at)
        .limit(1)
    )


def role_of(session: Session, project_uuid: uuid.UUID, email: str) -> int | None:
    """The user's role on the project, or None when they hold none."""
    permission = find(session, project_uuid, email)
    return permission.role if permission else None


def add_if_missing(session: Session, project_uuid: uuid.UUID, email: str, role: int) -> bool:
    """Insert unless the (project, email) pair exists; True when a row was inserted.
    Safe against a concurrent consumer inserting the same pair."""
    inserted = session.execute(
        insert(UserPermission)
        .values(id=uuid.uuid4(), project_uuid=project_uuid, email=email, role=role)
        .on_conflict_do_nothing(constraint="uq_user_permissions_project_email")
        .returning(UserPermission.id)
    ).first()
    return inserted is not None


def delete(session: Session, permission: UserPermission) -> None:
    session.delete(permission)
    session.flush()
