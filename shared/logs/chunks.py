"""Where a code's logs stand in its list (table `code_log_chunks`), so that any page costs
about the same wherever it sits, without numbering the logs themselves (migration
20261203_a4d9e2c7b1f5).

A code's list is ordered by (created_at, seq, id), the order pages are read in. It is cut
into chunks: a chunk starts at its key (`lo_*`) and runs up to the next chunk's; `n` is how
many logs it holds. The first chunk starts at -infinity, so every log has one. Statement
triggers on `codelogs` keep `n` exact (only rows really inserted or deleted count, so an
import that skips rows it already has changes nothing) and split a chunk that grew past
1,000 logs into chunks of 500. Logs that arrive out of order (an import of older logs, a
run that commits late) just add to the chunk their time falls in: nothing is renumbered.

A page is then: the code's chunks (one per 500–1,000 logs) summed up to the page's rank, and
an OFFSET of at most 1,000 from the chunk's key on the index. The sum still grows with the
list, 200 times slower than an OFFSET does (100 to 200 small rows per 100,000 logs).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Integer, Uuid, bindparam, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from shared.orm import Base


class CodeLogChunk(Base):
    __tablename__ = "code_log_chunks"

    code_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    # The chunk's first key; the first chunk's time is -infinity (never loaded as such).
    lo_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    lo_seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    lo_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, nullable=False)


@dataclass(frozen=True)
class Start:
    """Where a page of a code's logs starts: `rank` (0: the oldest log) is its oldest log,
    found `offset` logs past `key` (None: from the first log); `total`: the code's logs."""

    total: int
    rank: int
    key: tuple[datetime, int, uuid.UUID] | None
    offset: int


# One round trip, summed in the database: a code has a chunk per 500 to 1,000 logs (100 to 200
# rows for 100,000 logs), a fraction of a millisecond where the index would read 50,000 entries.
_LOCATE = text("""
    SELECT c.total, r.rank, CASE WHEN isfinite(c.lo_at) THEN c.lo_at END AS lo_at,
           c.lo_seq, c.lo_id, r.rank - (c.upto - c.n) AS offset
    FROM (SELECT lo_at, lo_seq, lo_id, n,
                 sum(n) OVER (ORDER BY lo_at, lo_seq, lo_id ROWS UNBOUNDED PRECEDING) AS upto,
                 sum(n) OVER () AS total
          FROM code_log_chunks WHERE code_id = :code_id) c,
         LATERAL (SELECT CASE WHEN :newest_first THEN greatest(c.total - :skip - :size, 0)
                              ELSE :skip END AS rank) r
    -- Past the end (rank ≥ total) the last chunk still answers, with the total.
    WHERE c.upto > least(r.rank, c.total - 1)
    ORDER BY c.upto LIMIT 1
""").bindparams(bindparam("code_id", type_=Uuid()))


def locate(session: Session, code_id: uuid.UUID, *, skip: int, size: int,
           newest_first: bool) -> Start:
    """The start of the page that skips `skip` logs from the newest end (`newest_first`) or
    the oldest, of `size` logs at most; `offset` is meaningless once `skip` ≥ `total`."""
    row = session.execute(_LOCATE, {"code_id": code_id, "skip": skip, "size": size,
                                    "newest_first": newest_first}).one_or_none()
    if row is None:  # no logs
        return Start(0, 0, None, 0)
    key = None if row.lo_at is None else (row.lo_at, row.lo_seq, row.lo_id)
    return Start(int(row.total), int(row.rank), key, int(row.offset))
