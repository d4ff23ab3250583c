"""`codeactions import-mongo`: the Go service's MongoDB-era collections into PostgreSQL.

Collections as the old service named them (`project`, `user_permissions`, `codelib`, `code`,
`coderun`, `codelog`; the plural spellings its CSV export script used are read too), in
that order so a run finds its code and a log its run. Each is read in `_id` order, a batch
at a time; a batch's rows and the collection's last `_id` are committed together in
`import_checkpoints`, so an interrupted import continues where it stopped and a second one
adds nothing. Every document keeps its ObjectID in `mongo_object_id` (old URLs resolve)
and gets a UUIDv5 of it as its id, so rows land in the same place however often imported.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy import Connection, Engine, Table, select
from sqlalchemy.dialects.postgresql import insert

from shared.access.permission import UserPermission
from shared.access.project import Project
from shared.adoption import checkpoints, project_ids
from shared.adoption.legacy_values import (
    LEGACY_WORKER,
    as_object,
    as_uuid,
    derived_uuid,
    is_object_id,
    object_id_text,
    parse_time,
    seq_in_run,
)
from shared.adoption.log_import import find_runs, run_ref_key
from shared.adoption.orphan_runs import orphans_allowed
from shared.codelibs.model import CodeLib
from shared.codes.model import CODE_TYPES, TIMEOUT_DEFAULT, TIMEOUT_MAX, TIMEOUT_MIN, Code
from shared.logs.model import LOG_TYPES, CodeLog
from shared.orm import table_of
from shared.runs.model import CodeRun
from shared.runs.statuses import FINISHED, RunStatus
from shared.settings import LANGUAGES

#: (what, its table, the collection names to read), in the order they must be imported.
COLLECTIONS: tuple[tuple[str, Table, tuple[str, ...]], ...] = (
    ("projects", table_of(Project), ("project", "projects")),
    ("permissions", table_of(UserPermission), ("user_permissions",)),
    ("libraries", table_of(CodeLib), ("codelib", "codelibs")),
    ("codes", table_of(Code), ("code", "codes")),
    ("runs", table_of(CodeRun), ("coderun", "coderuns")),
    ("logs", table_of(CodeLog), ("codelog", "codelogs")),
)
MAX_ERRORS_SHOWN = 20


class MongoImportAborted(Exception):
    """MongoDB or PostgreSQL failed mid-way; committed batches stay, a rerun continues."""


class Skip(Exception):
    """A document that cannot become a row; the message says why."""


@dataclass
class MongoCounts:
    scanned: int = 0
    imported: int = 0
    already: int = 0
    run_gone: int = 0
    errors: int = 0

    def add(self, other: MongoCounts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def describe(self) -> str:
        text = (f"{self.scanned:,} scanned, {self.imported:,} imported, "
                f"{self.already:,} already there, {self.errors:,} errors")
        if self.run_gone:
            text += f", {self.run_gone:,} skipped (run no longer exists)"
        return text


class MongoImporter:
    def __init__(self, engine: Engine, database: Any, out: TextIO, batch_size: int = 500,
                 restart: bool = False) -> None:
        self.engine = engine
        self.database = database  # a pymongo Database (or one that speaks its API)
        self.out = out
        self.batch_size = batch_size
        self.restart = restart
        self.errors_shown = 0

    def run(self) -> dict[str, MongoCounts]:
        started = time.monotonic()
        try:
            present = set(self.database.list_collection_names())
        except Exception as exc:
            raise MongoImportAborted(f"MongoDB is unreachable: {exc}") from exc
        results: dict[str, MongoCounts] = {}
        for what, table, names in COLLECTIONS:
            counts = MongoCounts()
            for name in names:
                if name in present:
                    counts.add(self._import_collection(what, table, name))
            results[what] = counts
        self._say(f"import-mongo finished in {time.monotonic() - started:.1f} s:")
        for what, counts in results.items():
            self._say(f"  {what}: {counts.describe()}")
        return results

    def _import_collection(self, what: str, table: Table, name: str) -> MongoCounts:
        checkpoint = f"import-mongo {self.database.name}.{name}"
        with self.engine.connect() as connection:
            position, saved, _ = checkpoints.load(connection, checkpoint)
        if self.restart:
            position, saved = None, {}
        overall = MongoCounts(**{k: v for k, v in saved.items()
                                 if k in MongoCounts.__dataclass_fields__})
        this_run = MongoCounts()
        if position:
            self._say(f"{name}: continuing after _id {position}")
        convert = _CONVERTERS[what]
        while True:
            documents = self._batch(name, position)
            if not documents:
                break
            batch = MongoCounts(scanned=len(documents))
            try:
                with self.engine.begin() as connection:
                    rows, orphans = convert(self, connection, documents, batch)
                    if rows:
                        statement = insert(table).on_conflict_do_nothing().returning(table.c.id)
                        if orphans:
                            with orphans_allowed(connection):
                                inserted = connection.execute(statement, rows).all()
                        else:
                            inserted = connection.execute(statement, rows).all()
                        batch.imported = len(inserted)
                        batch.already = len(rows) - batch.imported
                    overall.add(batch)
                    position = str(documents[-1]["_id"])
                    checkpoints.save(connection, checkpoint, position, overall.as_dict())
            except Exception as exc:
                raise MongoImportAborted(f"writing {name} to PostgreSQL failed: {exc}") from exc
            this_run.add(batch)
            self._say(f"{name}: {overall.describe()}")
        with self.engine.begin() as connection:
            checkpoints.save(connection, checkpoint, position, overall.as_dict(), finished=True)
        return this_run

    def _batch(self, name: str, after: str | None) -> list[dict[str, Any]]:
        from bson import ObjectId

        query = {"_id": {"$gt": ObjectId(after)}} if after else {}
        try:
            cursor = self.database[name].find(query).sort("_id", 1).limit(self.batch_size)
            return list(cursor)
        except Exception as exc:
            raise MongoImportAborted(f"reading {name} from MongoDB failed: {exc}") from exc

    def skipped(self, batch: MongoCounts, document: dict[str, Any], reason: str) -> None:
        batch.errors += 1
        if self.errors_shown < MAX_ERRORS_SHOWN:
            self._say(f"  skipped _id {document.get('_id')}: {reason}")
        elif self.errors_shown == MAX_ERRORS_SHOWN:
            self._say("  (further skipped documents are only counted)")
        self.errors_shown += 1

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)


# --- documents → rows -------------------------------------------------------------------

Converter = Callable[[MongoImporter, Connection, list[dict[str, Any]], MongoCounts],
                     tuple[list[dict[str, Any]], bool]]


def _times(document: dict[str, Any]) -> tuple[datetime, datetime]:
    """created_at (very old runs spelt it `creted_at`; else the ObjectID's own time)."""
    created = (parse_time(document.get("created_at")) or parse_time(document.get("creted_at"))
               or getattr(document["_id"], "generation_time", None))
    if created is None:
        raise Skip("no created_at")
    return created, parse_time(document.get("updated_at")) or created


def _text(value: object) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _legacy_ref(value: object) -> str:
    """A reference to another document: an ObjectID (as hex) or the text stored."""
    return str(value).strip() if value is not None else ""


def _each(importer: MongoImporter, documents: list[dict[str, Any]], batch: MongoCounts,
          make: Callable[[dict[str, Any]], dict[str, Any] | None]) -> list[dict[str, Any]]:
    rows = []
    for document in documents:
        try:
            row = make(document)
        except Skip as reason:
            importer.skipped(batch, document, str(reason))
            continue
        if row is not None:
            rows.append(row)
    return rows


def _base(kind: str, document: dict[str, Any]) -> dict[str, Any]:
    object_id = object_id_text(document["_id"])
    if object_id is None:
        raise Skip("no _id")
    created, updated = _times(document)
    return {"id": derived_uuid(kind, object_id), "mongo_object_id": object_id,
            "created_at": created, "updated_at": updated}


def _projects_of(connection: Connection, documents: list[dict[str, Any]],
                 field: str) -> dict[str, uuid.UUID]:
    originals = [str(d.get(field)) for d in documents if d.get(field) not in (None, "")]
    return project_ids.map_and_record(connection, originals)


def _convert_projects(importer, connection, documents, batch):  # noqa: ANN001, ANN202
    mapping = _projects_of(connection, documents, "uuid")

    def make(document: dict[str, Any]) -> dict[str, Any]:
        if document.get("uuid") in (None, ""):
            raise Skip("no uuid")
        authorizations = []
        for grant in document.get("authorizations") or []:
            if isinstance(grant, dict):
                role = grant.get("role")
                authorizations.append({
                    "user_email": grant.get("user_email") or grant.get("useremail")
                    or grant.get("UserEmail") or "",
                    "role": int(str(role)) if str(role).strip().isdigit() else role,
                })
        return {**_base("project", document), "uuid": mapping[str(document["uuid"])],
                "name": _text(document.get("name"))[:255], "authorizations": authorizations}

    return _each(importer, documents, batch, make), False


def _convert_permissions(importer, connection, documents, batch):  # noqa: ANN001, ANN202
    mapping = _projects_of(connection, documents, "project_uuid")

    def make(document: dict[str, Any]) -> dict[str, Any]:
        email = document.get("email") or document.get("user_email")
        if not email or document.get("project_uuid") in (None, ""):
            raise Skip("no email or no project_uuid")
        try:
            role = int(document["role"])
        except (KeyError, TypeError, ValueError):
            raise Skip(f"role {document.get('role')!r} is not a number") from None
        return {**_base("permission", document), "email": str(email)[:320], "role": role,
                "project_uuid": mapping[str(document["project_uuid"])]}

    return _each(importer, documents, batch, make), False


def _convert_libraries(importer, connection, documents, batch):  # noqa: ANN001, ANN202
    def make(document: dict[str, Any]) -> dict[str, Any]:
        if not document.get("name"):
            raise Skip("no name")
        return {**_base("codelib", document), "name": _text(document["name"])[:255],
                "language": _text(document.get("language") or "python")[:16],
                "catalog": False}

    return _each(importer, documents, batch, make), False


def _convert_codes(importer, connection, documents, batch):  # noqa: ANN001, ANN202
    mapping = _projects_of(connection, documents, "project_uuid")

    def make(document: dict[str, Any]) -> dict[str, Any]:
        if document.get("type") not in CODE_TYPES:
            raise Skip(f"type {document.get('type')!r} is not one of {', '.join(CODE_TYPES)}")
        if document.get("language") not in LANGUAGES:
            raise Skip(f"language {document.get('language')!r} is not one of "
                       f"{', '.join(LANGUAGES)}")
        if document.get("project_uuid") in (None, ""):
            raise Skip("no project_uuid")
        try:
            timeout = int(document.get("timeout") or TIMEOUT_DEFAULT)
        except (TypeError, ValueError):
            timeout = TIMEOUT_DEFAULT
        return {**_base("code", document), "name": _text(document.get("name"))[:255],
                "type": document["type"], "language": document["language"],
                "source": _text(document.get("source")), "url": document.get("url") or None,
                "project_uuid": mapping[str(document["project_uuid"])],
                "timeout": max(TIMEOUT_MIN, min(TIMEOUT_MAX, timeout)),
                "network": True, "warm": False, "compat": "legacy"}

    return _each(importer, documents, batch, make), False


def _convert_runs(importer, connection, documents, batch):  # noqa: ANN001, ANN202
    refs = {_legacy_ref(d.get("code_id")).lower() for d in documents}
    codes = dict(connection.execute(
        select(Code.mongo_object_id, Code.id)
        .where(Code.mongo_object_id.in_([r for r in refs if is_object_id(r)]))).all())

    def make(document: dict[str, Any]) -> dict[str, Any]:
        ref = _legacy_ref(document.get("code_id"))
        if is_object_id(ref):
            # A code deleted in MongoDB left its runs behind: kept as orphan runs, under
            # the id the code would have had.
            code_id = codes.get(ref.lower()) or derived_uuid("code", ref)
            code_mongo_id = ref.lower()
        elif (code_id := as_uuid(ref)) is not None:
            code_mongo_id = None
        else:
            raise Skip(f"code_id {ref!r} is neither an ObjectID nor a UUID")
        status = document.get("status")
        if status not in set(RunStatus):
            raise Skip(f"status {status!r} is not one of {', '.join(RunStatus)}")
        row = _base("run", document)
        finished = status in FINISHED
        return {**row, "code_id": code_id, "code_mongo_id": code_mongo_id,
                "status": status if finished else RunStatus.STARTED,
                "result": _text(document.get("result")),
                "extra": as_object(document.get("extra")),
                "params": as_object(document.get("params")),
                "body": _text(document.get("body")),
                "headers": as_object(document.get("headers")),
                "started_at": row["created_at"],
                "finished_at": row["updated_at"] if finished else None,
                "worker": None if finished else LEGACY_WORKER}

    rows = _each(importer, documents, batch, make)
    wanted = {row["code_id"] for row in rows}
    existing = set(connection.execute(select(Code.id).where(Code.id.in_(wanted))).scalars())
    return rows, bool(wanted - existing)


def _convert_logs(importer, connection, documents, batch):  # noqa: ANN001, ANN202
    runs = find_runs(connection, [_legacy_ref(d.get("run_id")) for d in documents])

    def make(document: dict[str, Any]) -> dict[str, Any] | None:
        if document.get("type") not in LOG_TYPES:
            raise Skip(f"type {document.get('type')!r} is not one of {', '.join(LOG_TYPES)}")
        run = runs.get(run_ref_key(_legacy_ref(document.get("run_id"))))
        if run is None:
            batch.run_gone += 1
            return None
        run_id, code_id, run_created = run
        row = _base("log", document)
        return {**row, "run_id": run_id, "code_id": code_id, "type": document["type"],
                "content": _text(document.get("content")),
                "seq": seq_in_run(row["created_at"], run_created)}

    return _each(importer, documents, batch, make), False


_CONVERTERS: dict[str, Converter] = {
    "projects": _convert_projects, "permissions": _convert_permissions,
    "libraries": _convert_libraries, "codes": _convert_codes, "runs": _convert_runs,
    "logs": _convert_logs,
}
