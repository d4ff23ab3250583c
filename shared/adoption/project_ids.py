"""Project ids the old service stored as unchecked text: UUIDs stay as they are, anything
else gets a UUIDv5 of its text and is remembered in `legacy_project_ids`."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import Connection, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.adoption.legacy_values import project_uuid_for
from shared.adoption.model import LegacyProjectId


def map_and_record(connection: Connection, originals: Iterable[str]) -> dict[str, uuid.UUID]:
    """Each original id → its UUID; the derived ones are recorded (idempotently)."""
    mapping: dict[str, uuid.UUID] = {}
    derived: list[dict[str, object]] = []
    for original in set(originals):
        mapped, was_derived = project_uuid_for(original)
        mapping[original] = mapped
        if was_derived:
            derived.append({"uuid": mapped, "original": original})
    if derived:
        connection.execute(
            insert(LegacyProjectId).on_conflict_do_nothing(index_elements=["uuid"]), derived
        )
    return mapping


def resolve(session: Session, original: str) -> uuid.UUID | None:
    """The UUID an old non-UUID project id was given at adoption, or None."""
    return session.scalar(
        select(LegacyProjectId.uuid).where(LegacyProjectId.original == original)
    )
