"""Recognising what a database holds before migrating it: ours (Alembic), nothing yet, the
Go service's (golang-migrate's `schema_migrations` at version 5, clean), or something that
must not be touched."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

#: The last migration of the Go service (weni-ai/flows-code-actions, migrations/00000N_*).
GO_SERVICE_VERSION = 5
GO_SERVICE_TABLES = ("codes", "codelibs", "coderuns", "user_permissions", "projects")
OURS, EMPTY, GO_SERVICE, REFUSED = "ours", "empty", "go-service", "refused"


@dataclass(frozen=True)
class DatabaseState:
    kind: str  # OURS, EMPTY, GO_SERVICE or REFUSED
    schema: str
    reason: str = ""  # why it is refused


def _tables(connection: Connection, schema: str) -> set[str]:
    rows = connection.execute(
        text("SELECT table_name FROM information_schema.tables "
             "WHERE table_schema = :schema AND table_type = 'BASE TABLE'"),
        {"schema": schema},
    )
    return {row[0] for row in rows}


def inspect_database(connection: Connection) -> DatabaseState:
    schema = connection.execute(text("SELECT current_schema()")).scalar_one()
    tables = _tables(connection, schema)
    if "alembic_version" in tables:
        return DatabaseState(OURS, schema)
    if "schema_migrations" not in tables:
        ours = {"codes", "coderuns", "codelogs", "codelibs", "projects", "user_permissions"}
        present = sorted(tables & ours)
        if present:
            return DatabaseState(REFUSED, schema, (
                f"tables {', '.join(present)} exist in schema {schema!r} but neither "
                "alembic_version (ours) nor schema_migrations (the Go service's) does: "
                "this is not a database this command knows how to migrate"
            ))
        return DatabaseState(EMPTY, schema)
    rows = connection.execute(text("SELECT version, dirty FROM schema_migrations")).all()
    if len(rows) != 1:
        return DatabaseState(REFUSED, schema, (
            f"schema_migrations holds {len(rows)} rows (golang-migrate keeps exactly one)"
        ))
    version, dirty = rows[0]
    if dirty:
        return DatabaseState(REFUSED, schema, (
            f"the Go service's migrations are dirty at version {version}: a migration "
            "failed half-way. Repair it with the Go service's tooling (golang-migrate "
            "`force`, after checking the schema) and run this again"
        ))
    if version != GO_SERVICE_VERSION:
        return DatabaseState(REFUSED, schema, (
            f"the Go service's schema is at version {version}; this platform adopts "
            f"version {GO_SERVICE_VERSION} only. Bring it to version "
            f"{GO_SERVICE_VERSION} with the Go service's migrations first"
        ))
    missing = [table for table in GO_SERVICE_TABLES if table not in tables]
    if missing:
        return DatabaseState(REFUSED, schema, (
            f"schema_migrations says version {GO_SERVICE_VERSION} but table(s) "
            f"{', '.join(missing)} are missing"
        ))
    return DatabaseState(GO_SERVICE, schema)
