"""Where an import stopped (table `import_checkpoints`), read and written inside the same
transaction as the batch it describes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects.postgresql import insert

from shared.adoption.model import ImportCheckpoint


def load(connection: Connection, name: str) -> tuple[str | None, dict[str, Any], bool]:
    """(position, counters, finished) of an import; (None, {}, False) for a new one."""
    row = connection.execute(
        select(ImportCheckpoint.position, ImportCheckpoint.counters,
               ImportCheckpoint.finished_at).where(ImportCheckpoint.name == name)
    ).first()
    if row is None:
        return None, {}, False
    return row.position, dict(row.counters or {}), row.finished_at is not None


def save(
    connection: Connection, name: str, position: str | None, counters: dict[str, Any],
    finished: bool = False,
) -> None:
    values = {"name": name, "position": position, "counters": counters,
              "finished_at": datetime.now(UTC) if finished else None,
              "updated_at": datetime.now(UTC)}
    statement = insert(ImportCheckpoint).values(values)
    connection.execute(statement.on_conflict_do_update(
        index_elements=["name"],
        set_={key: statement.excluded[key] for key in values if key != "name"},
    ))


def forget(connection: Connection, name: str) -> None:
    connection.execute(delete(ImportCheckpoint).where(ImportCheckpoint.name == name))
