"""The Go service's PostgreSQL database (golang-migrate version 5) becomes ours, in the
caller's one transaction: a failure anywhere leaves the old database exactly as it was.

How: the old tables move aside into schema `go_service_v5`; our own migration chain then
builds our tables where they were (so the result is exactly what a fresh `migrate` makes, and
`alembic check` agrees); every row is copied across with its ids and timestamps, converted
where our model differs; the old tables are dropped; the chain continues to head. What
converts how (SPEC.md "What existing deployments rely on"):

- `codes`: text project ids become UUIDs (`project_ids`); `compat` is `legacy`.
- `coderuns`: SQL NULL `result`/`body` become "", JSON `null` (Go's nil maps) or SQL NULL
  `extra`/`params`/`headers` become {}; `started_at` is `created_at` (the old service
  created runs `started`), `finished_at` its last update when it ended. Runs left `queued`
  or `started` stay `started` with `worker` = the Go service, so the stuck-run reaper ends
  them once past their code's timeout. Runs whose code was deleted are kept (`orphan_runs`).
- `codelibs`: kept as the operator's rows (`catalog` false): the catalog sync leaves them.
- `projects`, `user_permissions`: project ids as for codes; emails keep their case (ours
  compare case-insensitively). Rows that become one (two spellings of the same UUID) keep
  the most recently updated.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError, OperationalError

from shared.adoption import project_ids
from shared.adoption.legacy_schema import GO_SERVICE, GO_SERVICE_TABLES, inspect_database
from shared.adoption.legacy_values import LEGACY_WORKER, project_uuid_for
from shared.adoption.orphan_runs import orphans_allowed

LEGACY_SCHEMA = "go_service_v5"
#: Our revision the copy is written for; the chain continues to head afterwards, so later
#: migrations apply to adopted databases as to any other.
ADOPTION_REVISION = "60cd7de67b7b"
LOCK_TIMEOUT = "10s"


class AdoptionError(Exception):
    """The conversion cannot go on; nothing was changed."""


@dataclass
class AdoptionPlan:
    rows: dict[str, int] = field(default_factory=dict)
    runs_by_status: dict[str, int] = field(default_factory=dict)
    orphan_runs: int = 0
    emptied: dict[str, int] = field(default_factory=dict)  # "coderuns.extra": rows
    derived_project_ids: dict[str, uuid.UUID] = field(default_factory=dict)
    project_id_uses: Counter[str] = field(default_factory=Counter)
    merged_projects: int = 0
    merged_permissions: int = 0

    @property
    def unfinished_runs(self) -> int:
        return self.runs_by_status.get("queued", 0) + self.runs_by_status.get("started", 0)

    def lines(self, done: bool) -> list[str]:
        verb = (lambda past, future: past) if done else (lambda past, future: future)
        out = [
            verb("Converted", "Would convert") + " the Go service's database "
            "(golang-migrate version 5) to this platform's schema, in one transaction:",
        ]
        for table in GO_SERVICE_TABLES:
            out.append(f"  {table}: {self.rows.get(table, 0)} rows "
                       + verb("copied", "to copy") + " with their ids and timestamps")
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(self.runs_by_status.items()))
        out.append(f"  runs by status: {statuses or 'none'}")
        out.append(f"  runs left unfinished (queued or started): {self.unfinished_runs}, "
                   + verb("marked", "to mark") + " started by worker "
                   f"{LEGACY_WORKER!r}: the stuck-run reaper ends them failed")
        out.append(f"  orphan runs (their code was deleted): {self.orphan_runs}, kept and "
                   "readable (GET /coderun/<id>, GET /coderun?code_id=<old code id>)")
        for name, count in sorted(self.emptied.items()):
            if count:
                out.append(f"  {name}: {count} NULL or JSON null values "
                           + verb("made", "to make") + " empty")
        if self.derived_project_ids:
            out.append(f"  project ids that are not UUIDs: {len(self.derived_project_ids)}, "
                       + verb("given", "to give") + " UUIDs (kept in legacy_project_ids; "
                       "GET /code?project_uuid=<old id> still lists them):")
            for original, mapped in sorted(self.derived_project_ids.items()):
                out.append(f"    {original!r} -> {mapped} "
                           f"({self.project_id_uses[original]} rows)")
        else:
            out.append("  project ids that are not UUIDs: none")
        if self.merged_projects or self.merged_permissions:
            out.append(f"  rows naming the same project in two spellings: "
                       f"{self.merged_projects} projects and {self.merged_permissions} "
                       "permissions " + verb("merged", "to merge")
                       + " (the most recently updated kept)")
        out.append("  codelibs rows " + verb("kept", "to keep") + " as the operator's: the "
                   "library catalog sync never deletes them")
        return out


def _q(schema: str, table: str) -> str:
    return f'"{schema}"."{table}"'


def make_plan(connection: Connection, schema: str) -> AdoptionPlan:
    """What the conversion would do, read from the old tables in `schema` (read-only)."""
    plan = AdoptionPlan()

    def scalar(sql: str) -> int:
        return connection.execute(text(sql)).scalar_one()

    for table in GO_SERVICE_TABLES:
        plan.rows[table] = scalar(f"SELECT count(*) FROM {_q(schema, table)}")
    runs, codes = _q(schema, "coderuns"), _q(schema, "codes")
    plan.runs_by_status = dict(connection.execute(
        text(f"SELECT status, count(*) FROM {runs} GROUP BY status")).all())
    plan.orphan_runs = scalar(
        f"SELECT count(*) FROM {runs} r WHERE NOT EXISTS "
        f"(SELECT 1 FROM {codes} c WHERE c.id = r.code_id)")
    emptied = connection.execute(text(f"""
        SELECT count(*) FILTER (WHERE result IS NULL),
               count(*) FILTER (WHERE body IS NULL),
               count(*) FILTER (WHERE jsonb_typeof(extra) IS DISTINCT FROM 'object'),
               count(*) FILTER (WHERE jsonb_typeof(params) IS DISTINCT FROM 'object'),
               count(*) FILTER (WHERE jsonb_typeof(headers) IS DISTINCT FROM 'object')
        FROM {runs}""")).one()
    names = ("result", "body", "extra", "params", "headers")
    plan.emptied = {f"coderuns.{name}": count for name, count in zip(names, emptied, strict=True)}
    plan.emptied["projects.authorizations"] = scalar(
        f"SELECT count(*) FROM {_q(schema, 'projects')} "
        "WHERE jsonb_typeof(authorizations) IS DISTINCT FROM 'array'")
    uses = connection.execute(text(f"""
        SELECT project_uuid, count(*) FROM {codes} GROUP BY 1
        UNION ALL SELECT project_uuid, count(*) FROM {_q(schema, 'user_permissions')} GROUP BY 1
        UNION ALL SELECT uuid, count(*) FROM {_q(schema, 'projects')} GROUP BY 1""")).all()
    for original, count in uses:
        plan.project_id_uses[original] += count
        mapped, derived = project_uuid_for(original)
        if derived:
            plan.derived_project_ids[original] = mapped
    projects = Counter(
        project_uuid_for(original)[0] for (original,) in connection.execute(
            text(f"SELECT uuid FROM {_q(schema, 'projects')}")))
    plan.merged_projects = sum(n - 1 for n in projects.values())
    permissions: Counter[tuple[uuid.UUID, str]] = Counter()
    for original, email, count in connection.execute(text(
            f"SELECT project_uuid, email, count(*) FROM {_q(schema, 'user_permissions')} "
            "GROUP BY 1, 2")):
        permissions[(project_uuid_for(original)[0], email)] += count
    plan.merged_permissions = sum(n - 1 for n in permissions.values())
    return plan


def adopt(connection: Connection, alembic_config: Config, target: str = "head") -> AdoptionPlan:
    """Convert the Go service's database on `connection`, inside its open transaction (the
    caller commits). Raises AdoptionError, or the database's own error, leaving the
    transaction to be rolled back."""
    connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    state = inspect_database(connection)
    if state.kind != GO_SERVICE:
        raise AdoptionError(state.reason or "not the Go service's database (any more)")
    schema = state.schema
    old_tables = (*GO_SERVICE_TABLES, "schema_migrations")
    try:
        connection.execute(text(
            f"LOCK TABLE {', '.join(_q(schema, t) for t in old_tables)} "
            "IN ACCESS EXCLUSIVE MODE"))
    except OperationalError as exc:
        raise AdoptionError(
            f"the old tables stayed in use for {LOCK_TIMEOUT}: stop the Go service (and "
            f"anything else writing to this database) first ({exc.orig})") from None
    if connection.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :name"),
                          {"name": LEGACY_SCHEMA}).first():
        raise AdoptionError(f"schema {LEGACY_SCHEMA!r} exists already: this conversion "
                            "moves the old tables there; rename or drop it first")
    plan = make_plan(connection, schema)
    grants = _grants(connection, schema, GO_SERVICE_TABLES)

    connection.execute(text(f'CREATE SCHEMA "{LEGACY_SCHEMA}"'))
    for table in old_tables:
        connection.execute(text(f"ALTER TABLE {_q(schema, table)} SET SCHEMA \"{LEGACY_SCHEMA}\""))
    _upgrade(connection, alembic_config, ADOPTION_REVISION)
    _load_project_ids(connection)
    _copy_rows(connection, orphans=plan.orphan_runs > 0)
    for table, grantee, privilege in grants:
        connection.execute(text(f"GRANT {privilege} ON TABLE {_q(schema, table)} TO {grantee}"))
    try:
        for table in old_tables:  # no CASCADE: an operator's view on them stops us instead
            connection.execute(text(f"DROP TABLE {_q(LEGACY_SCHEMA, table)}"))
        connection.execute(text(f'DROP SCHEMA "{LEGACY_SCHEMA}"'))
    except DBAPIError as exc:
        raise AdoptionError(f"the old tables cannot be dropped: {exc.orig}") from None
    _upgrade(connection, alembic_config, target)
    return plan


def _upgrade(connection: Connection, alembic_config: Config, revision: str) -> None:
    alembic_config.attributes["connection"] = connection
    try:
        command.upgrade(alembic_config, revision)
    finally:
        alembic_config.attributes.pop("connection", None)


def _grants(connection: Connection, schema: str, tables: tuple[str, ...]) -> list[tuple]:
    """Privileges others held on the old tables (a read-only reporting role, say), so the new
    tables grant the same."""
    rows = connection.execute(text("""
        SELECT c.relname,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
               a.privilege_type
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
             aclexplode(c.relacl) a
        WHERE n.nspname = :schema AND c.relname = ANY(:tables) AND a.grantee <> c.relowner
    """), {"schema": schema, "tables": list(tables)})
    return [tuple(row) for row in rows]


def _load_project_ids(connection: Connection) -> None:
    """Every project id of the old tables → its UUID, in a temporary table the copy joins."""
    legacy = LEGACY_SCHEMA
    originals = [row[0] for row in connection.execute(text(f"""
        SELECT project_uuid FROM {_q(legacy, 'codes')}
        UNION SELECT project_uuid FROM {_q(legacy, 'user_permissions')}
        UNION SELECT uuid FROM {_q(legacy, 'projects')}"""))]
    mapping = project_ids.map_and_record(connection, originals)
    connection.execute(text(
        "CREATE TEMPORARY TABLE adoption_project_ids "
        "(original text PRIMARY KEY, uuid uuid NOT NULL) ON COMMIT DROP"))
    if mapping:
        connection.execute(
            text("INSERT INTO adoption_project_ids (original, uuid) VALUES (:original, :uuid)"),
            [{"original": original, "uuid": mapped} for original, mapped in mapping.items()],
        )


def _legacy_id(column: str) -> str:
    """SQL for a legacy id as we store it: 24-hex in lower case, empty as NULL."""
    return (f"CASE WHEN {column} ~ '^[0-9A-Fa-f]{{24}}$' THEN lower({column}) "
            f"ELSE NULLIF(btrim({column}), '') END")


def _json_object(column: str) -> str:
    return f"CASE WHEN jsonb_typeof({column}) = 'object' THEN {column} ELSE '{{}}'::jsonb END"


def _copy_rows(connection: Connection, orphans: bool) -> None:
    old = lambda table: _q(LEGACY_SCHEMA, table)  # noqa: E731
    unfinished = "r.status IN ('queued', 'started')"
    connection.execute(text(f"""
        INSERT INTO codes (id, mongo_object_id, name, type, source, language, url,
                           project_uuid, timeout, network, warm, compat, created_at, updated_at)
        SELECT c.id, {_legacy_id('c.mongo_object_id')}, c.name, c.type, c.source, c.language,
               c.url, m.uuid, c.timeout, true, false, 'legacy', c.created_at, c.updated_at
        FROM {old('codes')} c JOIN adoption_project_ids m ON m.original = c.project_uuid"""))
    copy_runs = text(f"""
        INSERT INTO coderuns (id, mongo_object_id, code_id, code_mongo_id, status, result,
                              extra, params, body, headers, started_at, finished_at, worker,
                              created_at, updated_at)
        SELECT r.id, {_legacy_id('r.mongo_object_id')}, r.code_id,
               {_legacy_id('r.code_mongo_id')},
               CASE WHEN {unfinished} THEN 'started' ELSE r.status END,
               COALESCE(r.result, ''), {_json_object('r.extra')}, {_json_object('r.params')},
               COALESCE(r.body, ''), {_json_object('r.headers')},
               r.created_at,
               CASE WHEN {unfinished} THEN NULL ELSE r.updated_at END,
               CASE WHEN {unfinished} THEN :legacy_worker END,
               r.created_at, r.updated_at
        FROM {old('coderuns')} r""")
    if orphans:
        with orphans_allowed(connection):
            connection.execute(copy_runs, {"legacy_worker": LEGACY_WORKER})
    else:
        connection.execute(copy_runs, {"legacy_worker": LEGACY_WORKER})
    connection.execute(text(f"""
        INSERT INTO codelibs (id, mongo_object_id, name, language, catalog, created_at,
                              updated_at)
        SELECT l.id, {_legacy_id('l.mongo_object_id')}, l.name, l.language, false,
               l.created_at, l.updated_at
        FROM {old('codelibs')} l"""))
    connection.execute(text(f"""
        INSERT INTO projects (id, mongo_object_id, uuid, name, authorizations, created_at,
                              updated_at)
        SELECT DISTINCT ON (m.uuid) p.id, {_legacy_id('p.mongo_object_id')}, m.uuid, p.name,
               CASE WHEN jsonb_typeof(p.authorizations) = 'array' THEN p.authorizations
                    ELSE '[]'::jsonb END,
               p.created_at, p.updated_at
        FROM {old('projects')} p JOIN adoption_project_ids m ON m.original = p.uuid
        ORDER BY m.uuid, p.updated_at DESC, p.id"""))
    connection.execute(text(f"""
        INSERT INTO user_permissions (id, mongo_object_id, project_uuid, email, role,
                                      created_at, updated_at)
        SELECT DISTINCT ON (m.uuid, u.email) u.id, {_legacy_id('u.mongo_object_id')}, m.uuid,
               u.email, u.role, u.created_at, u.updated_at
        FROM {old('user_permissions')} u JOIN adoption_project_ids m
             ON m.original = u.project_uuid
        ORDER BY m.uuid, u.email, u.updated_at DESC, u.id"""))
