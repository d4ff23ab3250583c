"""Apply a permission event: create, update or delete one user's role on one project.

Idempotent: `create` of a pair that exists sets its role (and changes nothing when it is the
same), `update` of a missing pair creates it (as the seed did), `delete` of a missing pair
does nothing.
"""

from __future__ import annotations

from typing import Any

from shared.access import permission_store
from shared.access.event_payloads import PermissionEvent, parse
from shared.db import Database
from shared.errors import InvalidInput


def apply_permission_event(db: Database, payload: Any) -> str:
    """Returns what changed ("created", "updated", "deleted", "unchanged"), for the log."""
    event: PermissionEvent = parse(PermissionEvent, payload)
    if event.action != "delete" and event.role is None:
        raise InvalidInput(f"role is required to {event.action} a permission", field="role")
    with db.session() as session:
        existing = permission_store.find(session, event.project, event.user)
        if event.action == "delete":
            if existing is None:
                return "unchanged"
            permission_store.delete(session, existing)
            outcome = "deleted"
        elif existing is None:
            inserted = permission_store.add_if_missing(
                session, event.project, event.user, event.role
            )
            outcome = "created" if inserted else "unchanged"
        elif existing.role != event.role:
            existing.role = event.role
            outcome = "updated"
        else:
            return "unchanged"
        session.commit()
    return outcome
