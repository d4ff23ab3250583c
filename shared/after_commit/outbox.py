"""The outbox (table `outbox`): durable after-commit steps, written in the same transaction
as the change they follow, removed once done. Whatever stays is the sweeper's."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    DateTime,
    Identity,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, Session, mapped_column

from shared.after_commit.steps import SWEEP_GRACE, Step, StepKind
from shared.orm import Base, table_of


class OutboxEntry(Base):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due_at", "due_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    args: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)

    def step(self) -> Step:
        return Step(StepKind(self.kind), self.run_id, self.args or {})


def add(connection: Connection, steps: list[Step]) -> list[int]:
    """Write the steps in the caller's transaction (one statement); returns their ids."""
    if not steps:
        return []
    table = table_of(OutboxEntry)
    statement = insert(table).values(due_at=func.now() + SWEEP_GRACE)
    rows = connection.execute(
        statement.returning(table.c.id, sort_by_parameter_order=True),
        [{"kind": s.kind.value, "run_id": s.run_id, "args": s.args} for s in steps],
    )
    return [row.id for row in rows]


def remove(connection: Connection, ids: Iterable[int]) -> None:
    ids = list(ids)
    if ids:
        connection.execute(delete(table_of(OutboxEntry)).where(OutboxEntry.id.in_(ids)))


def reschedule(connection: Connection, ids: Iterable[int], error: str, delay_seconds: float
               ) -> None:
    """One more failed attempt for these entries: try again after `delay_seconds`."""
    ids = list(ids)
    if not ids:
        return
    connection.execute(
        update(table_of(OutboxEntry))
        .where(OutboxEntry.id.in_(ids))
        .values(attempts=OutboxEntry.attempts + 1, last_error=error[:2000],
                due_at=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, delay_seconds))
    )


def claim_due(connection: Connection, limit: int) -> list[OutboxEntry]:
    """Entries due now, locked for this transaction; other sweepers skip them."""
    query = (
        select(table_of(OutboxEntry))
        .where(OutboxEntry.due_at <= func.now())
        .order_by(OutboxEntry.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [OutboxEntry(**row._mapping) for row in connection.execute(query)]


def pending_for(session: Session, run_id: uuid.UUID) -> list[OutboxEntry]:
    """What is still owed for a run (tests and operators)."""
    return list(session.scalars(select(OutboxEntry).where(OutboxEntry.run_id == run_id)))
