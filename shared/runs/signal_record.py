"""The finished run carried in its completion signal, so the request that waits for it
answers without reading the row back (one PostgreSQL round trip and a row's ORM load less
per sync call).

The message is JSON `{"status": …, "run": {column: value}}`; a plain status (older workers,
the reaper, a cancel, a run too big to carry) still works: the waiter reads the row then.
The row stays the truth: a missed or record-less signal always ends in a read.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Uuid

from shared.orm import table_of
from shared.runs.model import CodeRun

#: A bigger record (a large result or body) goes as a plain status: Redis delivers each
#: message to every API process, and reading one big row back costs less than that.
MAX_MESSAGE_BYTES = 64 * 1024


def encode(status: str, record: dict[str, Any] | None) -> str:
    """The signal's message: the record when there is one and it is small enough."""
    if record:
        message = json.dumps({"status": status, "run": record}, default=_plain,
                             ensure_ascii=False, separators=(",", ":"))
        if len(message) <= MAX_MESSAGE_BYTES:
            return message
    return status


def decode(message: str) -> tuple[str, dict[str, Any] | None]:
    """(status, record or None) from a message `encode` wrote, or a plain status."""
    if not message.startswith("{"):
        return message, None
    try:
        data = json.loads(message)
        return str(data["status"]), data.get("run")
    except (ValueError, KeyError, TypeError):
        return "ended", None


def to_run(record: dict[str, Any]) -> CodeRun | None:
    """A detached CodeRun as the row was written (None when the record does not fit the
    table, e.g. from a worker of another version: the caller reads the row then)."""
    columns = table_of(CodeRun).c
    values: dict[str, Any] = {}
    try:
        for name, value in record.items():
            column_type = columns[name].type
            if value is not None and isinstance(column_type, DateTime):
                value = datetime.fromisoformat(value)
            elif value is not None and isinstance(column_type, Uuid):
                value = uuid.UUID(value)
            values[name] = value
        if set(values) != set(columns.keys()):
            return None
        return CodeRun(**values)
    except (KeyError, ValueError, TypeError):
        return None


def _plain(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)  # UUIDs
