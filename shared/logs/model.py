"""One `engine.log.*` call of a run (table `codelogs`): the index that pages are read from.

The same logs are archived to S3 as one object per run (see `shared.logs.archive`).
"""

from __future__ import annotations

import uuid

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from shared.orm import Base, Timestamps, UuidPk
from shared.runs import model as _runs  # noqa: F401 - registers `coderuns`, its FK's table

LOG_TYPES = ("debug", "info", "error")
LOG_CONTENT_MAX = 8000


class CodeLog(UuidPk, Timestamps, Base):
    __tablename__ = "codelogs"
    __table_args__ = (
        CheckConstraint("type IN ('debug', 'info', 'error')", name="type"),
        # A page of a code's logs is a range of positions; with `id`, a page read by OFFSET
        # (while positions have a hole, see `store.page`) comes from the index alone.
        Index("ix_codelogs_code_id_position_id", "code_id", "position", "id"),
        Index("ix_codelogs_run_id_seq", "run_id", "seq"),
    )

    mongo_object_id: Mapped[str | None] = mapped_column(Text, unique=True)
    run_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("coderuns.id", ondelete="CASCADE"), nullable=False
    )
    code_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    type: Mapped[str] = mapped_column(String(8), nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False, default="")
    # Position within the run, so logs written in one batch keep their call order.
    seq: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Position within the code, 1..n in the order stored (migration e5a7c3f1b9d4): what a
    # page of the code's logs is read by. Given by `store.add_batch`, else by a row trigger.
    position: Mapped[int] = mapped_column(BigInteger, nullable=False)
