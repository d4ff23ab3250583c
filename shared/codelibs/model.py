"""A library that actions of one language may import (table `codelibs`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.orm import Base, Timestamps, UuidPk


class CodeLib(UuidPk, Timestamps, Base):
    __tablename__ = "codelibs"
    __table_args__ = (UniqueConstraint("name", "language", name="uq_codelibs_name_language"),)

    name: Mapped[str] = mapped_column(String(255), nullable=False)
    language: Mapped[str] = mapped_column(String(16), nullable=False)
    # What the engine image really has (its build-time manifest); null for what an engine
    # lists by hand (built-in modules) and for rows the old service wrote.
    version: Mapped[str | None] = mapped_column(String(64))
    # The names to import it by (`bs4` for beautifulsoup4; `google.auth` in a namespace).
    modules: Mapped[list[Any] | None] = mapped_column(JSONB)
