"""A library that actions of one language may import (table `codelibs`)."""

from __future__ import annotations

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shared.orm import Base, Timestamps, UuidPk


class CodeLib(UuidPk, Timestamps, Base):
    __tablename__ = "codelibs"
    __table_args__ = (UniqueConstraint("name", "language", name="uq_codelibs_name_language"),)

    name: Mapped[str] = mapped_column(String(255), nullable=False)
    language: Mapped[str] = mapped_column(String(16), nullable=False)
