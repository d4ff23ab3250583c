"""Runs whose code was deleted ("orphans"): the old service had no foreign key from runs to
codes, so deleting a code left its runs behind; ours has one (ON DELETE CASCADE).

Adopted orphans are kept, readable as any run: the key is re-added `NOT VALID`, which
PostgreSQL checks for every row written afterwards but not for the rows already there. So
our own runs still cannot point at a missing code, and deleting a code still deletes its
runs; only the adopted orphans are exempt."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, text

FOREIGN_KEY = "fk_coderuns_code_id_codes"


@contextmanager
def orphans_allowed(connection: Connection) -> Iterator[None]:
    """Within the caller's transaction: rows written inside may point at missing codes."""
    connection.execute(text(f"ALTER TABLE coderuns DROP CONSTRAINT {FOREIGN_KEY}"))
    yield
    connection.execute(text(
        f"ALTER TABLE coderuns ADD CONSTRAINT {FOREIGN_KEY} FOREIGN KEY (code_id) "
        "REFERENCES codes (id) ON DELETE CASCADE NOT VALID"
    ))
