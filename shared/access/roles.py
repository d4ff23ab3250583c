"""Who holds which role on a project (what authorization reads)."""

from __future__ import annotations

import uuid

from shared.access import permission_store
from shared.db import Database


def role_of(db: Database, project_uuid: uuid.UUID, email: str) -> int | None:
    """The user's role on the project, or None when they hold none."""
    with db.session() as session:
        return permission_store.role_of(session, project_uuid, email)
