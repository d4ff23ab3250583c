"""A user's role on a project (table `user_permissions`)."""

from __future__ import annotations

import uuid

from sqlalchemy import Integer, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from shared.orm import Base, Timestamps, UuidPk

VIEWER, CONTRIBUTOR, MODERATOR = 1, 2, 3


class UserPermission(UuidPk, Timestamps, Base):
    __tablename__ = "user_permissions"
    __table_args__ = (
        UniqueConstraint("project_uuid", "email", name="uq_user_permissions_project_email"),
    )

    project_uuid: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    email: Mapped[str] = mapped_column(String(320), nullable=False)
    role: Mapped[int] = mapped_column(Integer, nullable=False)
