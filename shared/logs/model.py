"""One `engine.log.*` call of a run (table `codelogs`): the index that pages are read from.

The same logs are archived to S3 as one object per run (see `shared.logs.archive`).
"""

from __future__ import annotations

import uuid

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from shared.orm import Base, Timestamps, UuidPk
from shared.runs import model as _runs  # noqa: F401 - registers `coderuns`, its FK's table

LOG_TYPES = ("debug", "info", "error")
LOG_CONTENT_MAX = 8000


class CodeLog(UuidPk, Timestamps, Base):
    __tablename__ = "codelogs"
    __table_args__ = (
        CheckConstraint("type IN ('debug', 'info', 'error')", name="type"),
        # With `id`: a page's ids come from the index alone (an index-only scan), and the
        # order newest first is total, so a page can be read from either end.
        Index("ix_codelogs_code_id_created_at_seq_id", "code_id", "created_at", "seq", "id"),
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
