"""How many logs a code has (table `code_log_counts`): kept exact by statement-level triggers
on `codelogs` (migration 20261129_b7e41c0d9a52), so a page of a code's logs never counts
them (a count over 100,000 rows costs more than the page itself)."""

from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from shared.orm import Base


class CodeLogCount(Base):
    __tablename__ = "code_log_counts"

    code_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    total: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
