"""`codeactions import-logs`: the Go service's logs, one S3 object per log line, into our log
index (`codelogs`), so `GET /codelog` shows them.

The old layout is `{prefix}/logs/{YYYY}/{MM}/{DD}/{run_id}/{code_id}/{log_id}.json` (older
objects sit under `{bucket}/{prefix}/logs/…`, the bucket's name repeated). Both prefixes are
listed in key order, one page at a time; a page's objects are read concurrently, mapped to
their run (by UUID or ObjectID) and inserted in one statement that skips rows already there.
The page's last key is saved in `import_checkpoints` in the same transaction, so an
interrupted import continues after the last page that was committed and nothing is ever
imported twice. Our own archive objects (`…/logs.json`) are indexed already and skipped.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, TextIO

from sqlalchemy import Engine, or_, select
from sqlalchemy.dialects.postgresql import insert

from shared.adoption import checkpoints
from shared.adoption.legacy_values import (
    as_uuid,
    derived_uuid,
    is_object_id,
    parse_time,
    seq_in_run,
)
from shared.logs.model import LOG_TYPES, CodeLog
from shared.orm import table_of
from shared.runs.model import CodeRun
from shared.settings import Settings

OUR_ARCHIVE_NAME = "logs.json"  # shared/log_archive.py: one object per run, indexed already
MAX_ERRORS_SHOWN = 20


class ImportAborted(Exception):
    """S3 or PostgreSQL failed mid-way; committed pages stay, a rerun continues."""


@dataclass
class LogImportOptions:
    bucket: str
    prefix: str
    since: date | None = None
    until: date | None = None
    page_size: int = 1000
    readers: int = 16
    restart: bool = False
    progress_every: float = 2.0


@dataclass
class LogCounts:
    scanned: int = 0
    imported: int = 0
    already: int = 0
    run_gone: int = 0
    ours: int = 0
    errors: int = 0

    def add(self, other: LogCounts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def describe(self) -> str:
        return (f"{self.scanned:,} objects scanned, {self.imported:,} imported, "
                f"{self.already:,} already there, {self.run_gone:,} skipped (run no longer "
                f"exists), {self.ours:,} skipped (this platform's own archives), "
                f"{self.errors:,} errors")


@dataclass
class _Parsed:
    """One object's outcome: a row to insert (with its run still to find), or a verdict."""

    key: str
    verdict: str = ""  # "", "ours", "error"
    reason: str = ""
    run_ref: str = ""
    row: dict[str, Any] = field(default_factory=dict)


def s3_client(settings: Settings, connections: int) -> Any:
    import boto3
    from botocore.config import Config

    credentials: dict[str, str] = {}
    if settings.s3_access_key_id:
        credentials = {"aws_access_key_id": settings.s3_access_key_id,
                       "aws_secret_access_key": settings.s3_secret_access_key}
    return boto3.client(
        "s3", endpoint_url=settings.s3_endpoint or None, region_name=settings.s3_region,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5,
                      max_pool_connections=connections),
        **credentials,
    )


def scan_prefixes(bucket: str, prefix: str) -> list[str]:
    base = f"{prefix.strip('/')}/logs/" if prefix.strip("/") else "logs/"
    return [base, f"{bucket}/{base}"]


class LogImporter:
    def __init__(self, engine: Engine, client: Any, options: LogImportOptions,
                 out: TextIO) -> None:
        self.engine = engine
        self.client = client
        self.options = options
        self.out = out
        self.errors_shown = 0

    def run(self) -> LogCounts:
        total = LogCounts()
        started = time.monotonic()
        with ThreadPoolExecutor(self.options.readers, thread_name_prefix="s3-read") as pool:
            for scan_prefix in scan_prefixes(self.options.bucket, self.options.prefix):
                total.add(self._import_prefix(scan_prefix, pool))
        elapsed = time.monotonic() - started
        rate = total.scanned / elapsed if elapsed > 0 else 0.0
        self._say(f"import-logs finished: {total.describe()} "
                  f"(this run: {elapsed:.1f} s, {rate:,.0f} objects/s)")
        return total

    # --- one prefix ---------------------------------------------------------------------

    def checkpoint_name(self, scan_prefix: str) -> str:
        name = f"import-logs s3://{self.options.bucket}/{scan_prefix}"
        if self.options.since:
            name += f" since {self.options.since.isoformat()}"
        if self.options.until:
            name += f" until {self.options.until.isoformat()}"
        return name

    def _import_prefix(self, scan_prefix: str, pool: ThreadPoolExecutor) -> LogCounts:
        name = self.checkpoint_name(scan_prefix)
        with self.engine.connect() as connection:
            position, saved, finished = checkpoints.load(connection, name)
        if self.options.restart:
            position, saved, finished = None, {}, False
        fields = LogCounts.__dataclass_fields__
        overall = LogCounts(**{k: v for k, v in saved.items() if k in fields})
        if position:
            self._say(f"s3://{self.options.bucket}/{scan_prefix}: continuing after {position}"
                      + (" (finished before: only objects added since)" if finished else ""))
        start_after = position or ""
        if self.options.since:
            start_after = max(start_after, f"{scan_prefix}{self.options.since:%Y/%m/%d}")
        this_run = LogCounts()
        last_said = time.monotonic()
        for keys, reached_end in self._pages(scan_prefix, start_after):
            page = LogCounts()
            if keys:
                parsed = list(pool.map(self._read, keys))
                self._write(name, parsed, keys[-1], page, overall)
            this_run.add(page)
            now = time.monotonic()
            if reached_end or now - last_said >= self.options.progress_every:
                last_said = now
                self._say(f"s3://{self.options.bucket}/{scan_prefix}: {overall.describe()}")
        with self.engine.begin() as connection:
            current, _, _ = checkpoints.load(connection, name)
            checkpoints.save(connection, name, current, overall.as_dict(), finished=True)
        return this_run

    def _pages(self, scan_prefix: str, start_after: str) -> Iterator[tuple[list[str], bool]]:
        """Pages of log-object keys after `start_after`, up to `until`; the flag marks the
        last page."""
        until = self.options.until
        while True:
            try:
                answer = self.client.list_objects_v2(
                    Bucket=self.options.bucket, Prefix=scan_prefix, StartAfter=start_after,
                    MaxKeys=self.options.page_size)
            except Exception as exc:
                raise ImportAborted(f"listing s3://{self.options.bucket}/{scan_prefix} "
                                    f"failed: {exc}") from exc
            keys = [entry["Key"] for entry in answer.get("Contents", [])]
            if until is not None:
                kept = [key for key in keys if not _after_day(key, scan_prefix, until)]
                if len(kept) < len(keys):
                    yield kept, True
                    return
            done = not answer.get("IsTruncated") or not keys
            yield keys, done
            if done:
                return
            start_after = keys[-1]

    # --- one object ---------------------------------------------------------------------

    def _read(self, key: str) -> _Parsed:
        file_name = key.rsplit("/", 1)[-1]
        if file_name == OUR_ARCHIVE_NAME:
            return _Parsed(key, "ours")
        if not file_name.endswith(".json"):
            return _Parsed(key, "error", "not a .json log object")
        try:
            body = self.client.get_object(Bucket=self.options.bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return _Parsed(key, "error", "deleted while the import ran")
        except Exception as exc:
            raise ImportAborted(f"reading s3://{self.options.bucket}/{key} failed: {exc}") \
                from exc
        return parse_log_object(key, body)

    # --- one page -----------------------------------------------------------------------

    def _write(self, name: str, parsed: list[_Parsed], last_key: str, page: LogCounts,
               overall: LogCounts) -> None:
        page.scanned = len(parsed)
        rows: list[dict[str, Any]] = []
        try:
            with self.engine.begin() as connection:
                runs = find_runs(connection, [p.run_ref for p in parsed if not p.verdict])
                for item in parsed:
                    if item.verdict == "ours":
                        page.ours += 1
                    elif item.verdict == "error":
                        page.errors += 1
                        self._error(item)
                    elif (run := runs.get(run_ref_key(item.run_ref))) is None:
                        page.run_gone += 1
                    else:
                        run_id, code_id, run_created = run
                        rows.append({**item.row, "run_id": run_id, "code_id": code_id,
                                     "seq": seq_in_run(item.row["created_at"], run_created)})
                if rows:
                    inserted = connection.execute(
                        insert(table_of(CodeLog)).on_conflict_do_nothing()
                        .returning(table_of(CodeLog).c.id), rows).all()
                    page.imported = len(inserted)
                    page.already = len(rows) - page.imported
                overall.add(page)
                checkpoints.save(connection, name, last_key, overall.as_dict())
        except ImportAborted:
            raise
        except Exception as exc:
            raise ImportAborted(f"writing logs to PostgreSQL failed: {exc}") from exc

    def _error(self, item: _Parsed) -> None:
        if self.errors_shown < MAX_ERRORS_SHOWN:
            self._say(f"  skipped s3://{self.options.bucket}/{item.key}: {item.reason}")
        elif self.errors_shown == MAX_ERRORS_SHOWN:
            self._say("  (further skipped objects are only counted)")
        self.errors_shown += 1

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)


def parse_log_object(key: str, body: bytes) -> _Parsed:
    """One old log object → the row it becomes (run not yet resolved), or why not."""
    parts = key.rsplit("/", 3)  # …/{run_id}/{code_id}/{log_id}.json
    try:
        document = json.loads(body)
    except ValueError:
        return _Parsed(key, "error", "not JSON")
    if not isinstance(document, dict):
        return _Parsed(key, "error", "not a JSON object")
    log_id = str(document.get("id") or parts[-1][: -len(".json")])
    run_ref = str(document.get("run_id") or (parts[-3] if len(parts) == 4 else ""))
    log_type = document.get("type")
    if log_type not in LOG_TYPES:
        return _Parsed(key, "error", f"type {log_type!r} is not one of {', '.join(LOG_TYPES)}")
    if not (as_uuid(run_ref) or is_object_id(run_ref)):
        return _Parsed(key, "error", f"run_id {run_ref!r} is neither a UUID nor an ObjectID")
    created_at = parse_time(document.get("created_at"))
    if created_at is None:
        return _Parsed(key, "error", f"created_at {document.get('created_at')!r} is not "
                       "an ISO-8601 time")
    if (as_log_uuid := as_uuid(log_id)) is not None:
        row_id, mongo_id = as_log_uuid, None
    elif is_object_id(log_id):
        row_id, mongo_id = derived_uuid("log", log_id), log_id.lower()
    else:
        return _Parsed(key, "error", f"id {log_id!r} is neither a UUID nor an ObjectID")
    content = document.get("content")
    row = {
        "id": row_id, "mongo_object_id": mongo_id, "type": log_type,
        "content": content if isinstance(content, str) else
        ("" if content is None else json.dumps(content)),
        "created_at": created_at,
        "updated_at": parse_time(document.get("updated_at")) or created_at,
    }
    return _Parsed(key, run_ref=run_ref, row=row)


def run_ref_key(ref: str) -> str:
    """One spelling per run reference: a UUID's canonical text, an ObjectID in lower case."""
    parsed = as_uuid(ref)
    return str(parsed) if parsed is not None else ref.lower()


def find_runs(connection, refs: list[str]) -> dict[str, tuple[uuid.UUID, uuid.UUID, datetime]]:  # noqa: ANN001
    """`run_ref_key` → (run id, code id, created_at) of the runs that exist."""
    ids = {parsed for ref in refs if (parsed := as_uuid(ref)) is not None}
    object_ids = {ref.lower() for ref in refs if is_object_id(ref)}
    if not ids and not object_ids:
        return {}
    rows = connection.execute(
        select(CodeRun.id, CodeRun.mongo_object_id, CodeRun.code_id, CodeRun.created_at)
        .where(or_(CodeRun.id.in_(ids), CodeRun.mongo_object_id.in_(object_ids)))
    ).all()
    found: dict[str, tuple[uuid.UUID, uuid.UUID, datetime]] = {}
    for run_id, mongo_id, code_id, created_at in rows:
        found[str(run_id)] = (run_id, code_id, created_at)
        if mongo_id:
            found[mongo_id] = (run_id, code_id, created_at)
    return found


def _after_day(key: str, scan_prefix: str, until: date) -> bool:
    """True when the key's YYYY/MM/DD folder is after `until` (keys sort by day)."""
    parts = key[len(scan_prefix):].split("/")
    try:
        return date(int(parts[0]), int(parts[1]), int(parts[2])) > until
    except (IndexError, ValueError):
        return False

