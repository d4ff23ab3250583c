"""One execution of a code (table `coderuns`): a state machine queued → started → done."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.codes import model as _codes  # noqa: F401 - registers `codes`, its FK's table
from shared.orm import Base, Timestamps, UuidPk
from shared.runs.statuses import RunStatus

#: Key of `extra` on a failed run whose caller still got the result the code had set (a
#: legacy code failing after result.set, as the old engine answered it): `true`.
ANSWERED = "answered"


class CodeRun(UuidPk, Timestamps, Base):
    __tablename__ = "coderuns"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'started', 'completed', 'failed')", name="status"
        ),
        Index("ix_coderuns_code_id_created_at", "code_id", "created_at"),
        Index("ix_coderuns_created_at", "created_at"),
        # The stuck-run reaper's scan, every minute: only the few runs in `started`.
        Index("ix_coderuns_started_at_started", "started_at",
              postgresql_where=text("status = 'started'")),
        # Runs adopted from the Go service by their deleted code's ObjectID (orphan runs).
        Index("ix_coderuns_code_mongo_id", "code_mongo_id",
              postgresql_where=text("code_mongo_id IS NOT NULL")),
    )

    mongo_object_id: Mapped[str | None] = mapped_column(Text, unique=True)
    code_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("codes.id", ondelete="CASCADE"), nullable=False
    )
    code_mongo_id: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=RunStatus.QUEUED)
    result: Mapped[str] = mapped_column(Text, nullable=False, default="")
    extra: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)
    body: Mapped[str] = mapped_column(Text, nullable=False, default="")
    headers: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)
    # Ours, beyond the legacy schema: where and how the run went.
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker: Mapped[str | None] = mapped_column(String(255))
    container_id: Mapped[str | None] = mapped_column(String(80))
    exit_reason: Mapped[str | None] = mapped_column(String(64))
    # A started run belongs to its worker until then; the worker extends it while the run
    # executes, so a run whose lease ran out has lost its worker (shared/runs/stuck_runs.py).
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # How many times a worker took the run to execute (the claim counts): exactly-once means
    # never more than 1, which `make chaos` checks.
    executions: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default=text("0")
    )
    # Where the finished run is POSTed, and how each delivery attempt went:
    # {"url": …, "status": pending|delivered|failed, "attempts": [{…}, …]}; None: no callback.
    # none_as_null: "no callback" is SQL NULL, never the JSON `null` (which IS NOT NULL).
    callback: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))

    @property
    def wants_callback(self) -> bool:
        """A callback object (older rows may hold a JSON `null`): as `store.finish` tells."""
        return isinstance(self.callback, dict)
