"""Apply a project event: the project exists afterwards, with a permission for each of its
authorizations. Idempotent: the same event twice changes nothing."""

from __future__ import annotations

from typing import Any

from shared.access import permission_store, project_store
from shared.access.event_payloads import ProjectEvent, parse
from shared.db import Database


def apply_project_event(db: Database, payload: Any) -> str:
    """Returns what changed ("created", "updated", "unchanged"), for the log."""
    event: ProjectEvent = parse(ProjectEvent, payload)
    authorizations = [a.model_dump() for a in event.authorizations or []]
    with db.session() as session:
        created = project_store.add_if_missing(session, event.uuid, event.name, authorizations)
        changed = created
        if not created:
            project = project_store.get_by_uuid(session, event.uuid)
            if project.name != event.name or project.authorizations != authorizations:
                project.name, project.authorizations = event.name, authorizations
                changed = True
        for grant in event.authorizations or []:
            # A role the user already holds stays: permission events are the newer word.
            if permission_store.find(session, event.uuid, grant.user_email) is None:
                changed |= permission_store.add_if_missing(
                    session, event.uuid, grant.user_email, grant.role
                )
        session.commit()
    return "created" if created else "updated" if changed else "unchanged"
