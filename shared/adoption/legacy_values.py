"""How values of the Go service become ours, shared by the schema conversion and the
imports: ids, project ids, times, JSON maps, and a log's place within its run."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

OBJECT_ID = re.compile(r"^[0-9a-fA-F]{24}$")
# Fixed for all time: the UUIDs derived below must come out the same on every run, so a
# second import (or a resumed one) finds the rows the first one wrote.
NAMESPACE = uuid.UUID("6f1d9a52-3c3e-4c8e-9a57-5e0c2d7b1a40")
#: The `worker` of runs the Go service left unfinished: the stuck-run reaper names it.
LEGACY_WORKER = "flows-code-actions"
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def is_object_id(value: object) -> bool:
    return isinstance(value, str) and bool(OBJECT_ID.match(value))


def as_uuid(value: object) -> uuid.UUID | None:
    """The UUID a text spells (any case, with or without hyphens or braces), else None."""
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def derived_uuid(kind: str, legacy_id: str) -> uuid.UUID:
    """The UUID a row known only by a legacy id gets (a MongoDB document, a log whose id
    is an ObjectID): UUIDv5, so importing it again lands on the same row."""
    return uuid.uuid5(NAMESPACE, f"{kind}:{legacy_id.lower()}")


def project_uuid_for(original: str) -> tuple[uuid.UUID, bool]:
    """(the project's UUID, whether it was derived): the old service kept project ids as
    unchecked text; one that is not a UUID gets a UUIDv5 of the text."""
    parsed = as_uuid(original)
    if parsed is not None:
        return parsed, False
    return uuid.uuid5(NAMESPACE, f"project:{original}"), True


def object_id_text(value: object) -> str | None:
    """A legacy id as we store it in `mongo_object_id`: 24-hex lower case; None if empty."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    return text.lower() if OBJECT_ID.match(text) else text


def parse_time(value: object) -> datetime | None:
    """An ISO-8601 time with offset or `Z` (Go writes nanoseconds, Python microseconds), or
    a datetime (naive ones are UTC, as MongoDB's are); None when it is neither."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def as_object(value: object) -> dict[str, Any]:
    """A JSON map field: Go's nil maps were stored as JSON `null`; ours are `{}`."""
    return value if isinstance(value, dict) else {}


def seq_in_run(log_time: datetime, run_created_at: datetime) -> int:
    """A log's position within its run. Old logs were one object each, with no order but
    their time: microseconds since the run was created put them in call order."""
    offset = (log_time - run_created_at) // _MICROSECOND
    return max(INT32_MIN, min(INT32_MAX, offset))


_MICROSECOND = datetime(2000, 1, 1, 0, 0, 0, 1) - datetime(2000, 1, 1)
