"""What PostgreSQL can store: no text or jsonb value may hold a NUL character (`\\u0000`).

A NUL in anything a request stores (a code's fields, a run's query, body or headers) is
refused with a 400 naming the field, before anything is written: storing it escaped would
hand the code something other than what was sent, and letting it through made a 500 with a
half-finished request. One rule for every field, so a caller learns it once (README)."""

from __future__ import annotations

from collections.abc import Mapping

from shared.errors import InvalidInput

NUL = "\x00"


def first_nul(value: object, field: str) -> str | None:
    """The name of the first part of `value` holding a NUL (`field`, `field.key`,
    `field.0`), or None. Mappings and lists are walked; other values are not text."""
    if isinstance(value, str):
        return field if NUL in value else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and NUL in key:
                return field
            found = first_nul(item, f"{field}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = first_nul(item, f"{field}.{index}")
            if found is not None:
                return found
    return None


def ensure_storable(value: object, field: str) -> None:
    """Refuse `value` (400 naming the part) if it holds a NUL character anywhere."""
    found = first_nul(value, field)
    if found is not None:
        raise InvalidInput(
            f"{found} must not contain a NUL character (\\u0000)", field=found
        )
