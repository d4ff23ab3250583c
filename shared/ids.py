"""Ids in URLs: a UUID, or the 24-hex ObjectID that data from the MongoDB era keeps."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

_OBJECT_ID = re.compile(r"^[0-9a-fA-F]{24}$")


class InvalidId(ValueError):
    pass


@dataclass(frozen=True)
class EntityId:
    uuid: uuid.UUID | None = None
    mongo_object_id: str | None = None


def parse_id(raw: str, field: str = "id") -> EntityId:
    """Accept a UUID or a legacy ObjectID; anything else is an `InvalidId` naming `field`."""
    value = (raw or "").strip()
    if _OBJECT_ID.match(value):
        return EntityId(mongo_object_id=value.lower())
    try:
        return EntityId(uuid=uuid.UUID(value))
    except ValueError:
        raise InvalidId(f"{field} must be a UUID or a 24-hex ObjectID, got {raw!r}") from None
