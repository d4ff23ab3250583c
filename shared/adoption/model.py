"""Tables adoption keeps: project ids that were not UUIDs, and where each import stopped."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Text, Uuid, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.orm import Base


class LegacyProjectId(Base):
    """A project id of the old service that was not a UUID (it stored `project_uuid` as
    unchecked text). Its rows now carry `uuid`, a UUIDv5 of the text; the text stays here,
    so lists by the old id keep working and the operator can see what was mapped."""

    __tablename__ = "legacy_project_ids"

    uuid: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    original: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class ImportCheckpoint(Base):
    """How far one import got (`import-logs` per S3 prefix and window, `import-mongo` per
    collection): written in the same transaction as the rows it covers, so a resumed
    import starts exactly after the last batch that was committed."""

    __tablename__ = "import_checkpoints"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    # The last S3 key or MongoDB _id of a committed batch; None: nothing committed yet.
    position: Mapped[str | None] = mapped_column(Text)
    # Running totals (scanned, imported, …) across interruptions.
    counters: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )
