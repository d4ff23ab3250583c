"""A project of the wider platform, learnt from its events (table `projects`)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import String, Uuid
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.orm import Base, Timestamps, UuidPk


class Project(UuidPk, Timestamps, Base):
    __tablename__ = "projects"

    uuid: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    authorizations: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, nullable=False, default=list
    )
