"""A library that actions of one language may import (table `codelibs`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, String, Text, UniqueConstraint, false
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.orm import Base, Timestamps, UuidPk


class CodeLib(UuidPk, Timestamps, Base):
    __tablename__ = "codelibs"
    __table_args__ = (UniqueConstraint("name", "language", name="uq_codelibs_name_language"),)

    mongo_object_id: Mapped[str | None] = mapped_column(Text, unique=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    language: Mapped[str] = mapped_column(String(16), nullable=False)
    # True: listed by the catalog sync from what an engine ships (and removed by it when no
    # engine ships it any more). False: an operator's row (or one adopted from the Go
    # service), which the sync never touches.
    catalog: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    # What the engine image really has (its build-time manifest); null for what an engine
    # lists by hand (built-in modules) and for rows the old service wrote.
    version: Mapped[str | None] = mapped_column(String(64))
    # The names to import it by (`bs4` for beautifulsoup4; `google.auth` in a namespace).
    modules: Mapped[list[Any] | None] = mapped_column(JSONB)
