"""Declarative base and the column shapes every table shares."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import DateTime, MetaData, Table, Uuid, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names so Alembic autogenerate and `alembic check` agree run to run.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UuidPk:
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)


class Timestamps:
    # Fetch server-made timestamps with RETURNING, so objects stay usable after commit.
    __mapper_args__ = {"eager_defaults": True}

    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


def table_of(model: type[Base]) -> Table:
    """A model's table, typed as one (`__table__` is typed as any FromClause)."""
    return cast(Table, model.__table__)


Model = TypeVar("Model", bound=Base)


def detached(model: type[Model], row: Any, prefix: str = "") -> Model:
    """A detached copy of one of the model's rows as a Core statement returned it (columns
    labelled `prefix` + name): the hot paths read rows without the ORM's loading."""
    values = row._mapping
    return model(**{c.name: values[prefix + c.name] for c in table_of(model).c})
