"""How fast `codeactions import-logs` goes: N old-layout log objects in S3 (spread over runs
and days as the Go service wrote them), imported into a fresh database.

    python -m codeactions.bench.log_import --objects 50000

Uses FLOWS_CODE_ACTIONS_DB_URI's server (creating and dropping a database of its own) and
the configured S3 endpoint (a bucket of its own), e.g. the services of `make run`.
"""

from __future__ import annotations

import argparse
import io
import json
import secrets
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from shared.adoption.log_import import LogImporter, LogImportOptions, s3_client
from shared.adoption.migrate import run_migrate
from shared.settings import load_settings

PREFIX = "codeactions"
LOGS_PER_RUN = 10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=50_000)
    parser.add_argument("--readers", type=int, default=16)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--s3-pid", type=int, help="the S3 server's pid, to count its CPU too")
    args = parser.parse_args(argv)
    settings = load_settings()
    name = f"bench_logs_{uuid.uuid4().hex[:6]}"
    admin = create_engine(settings.sqlalchemy_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(settings.sqlalchemy_url).set(database=name).render_as_string(False)
    bench_settings = settings.model_copy(update={"db_uri": url})
    bucket = f"bench-logs-{uuid.uuid4().hex[:6]}"
    client = s3_client(settings, args.readers)
    client.create_bucket(Bucket=bucket)
    engine = create_engine(url)
    try:
        run_migrate(bench_settings, "alembic.ini", "head", False, io.StringIO(), sys.stderr)
        keys = _fill(engine, client, bucket, args.objects, args.readers)
        started, cpu, s3_cpu = time.monotonic(), time.process_time(), _cpu_of(args.s3_pid)
        counts = LogImporter(engine, client, LogImportOptions(
            bucket=bucket, prefix=PREFIX, readers=args.readers, page_size=args.page_size,
            progress_every=10), sys.stdout).run()
        elapsed = time.monotonic() - started
        cpu_ms = (time.process_time() - cpu) * 1000 / counts.scanned
        rate = counts.scanned / elapsed
        print(f"{keys:,} objects: imported {counts.imported:,} in {elapsed:.1f} s = "
              f"{rate:,.0f} objects/s; a million would take {1_000_000 / rate / 60:.1f} min")
        print(f"importer CPU: {cpu_ms:.2f} ms per object")
        if args.s3_pid:
            s3_ms = (_cpu_of(args.s3_pid) - s3_cpu) * 1000 / counts.scanned
            print(f"S3 server CPU: {s3_ms:.2f} ms per object")
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
    return 0


def _cpu_of(pid: int | None) -> float:
    """CPU seconds a process has used (user + system), from /proc."""
    if not pid:
        return 0.0
    import os

    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fill(engine, client, bucket: str, objects: int, readers: int) -> int:  # noqa: ANN001
    """Codes and runs in the database; their logs as the Go service wrote them."""
    runs = max(1, objects // LOGS_PER_RUN)
    start = datetime.now(UTC) - timedelta(days=20)
    code_id = uuid.uuid4()
    rows = [(uuid.uuid4(), start + timedelta(seconds=30 * n)) for n in range(runs)]
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO codes (id, name, type, source, language, project_uuid, timeout) "
            "VALUES (:id, 'bench', 'flow', '', 'python', :p, 60)"),
            {"id": code_id, "p": uuid.uuid4()})
        connection.execute(text(
            "INSERT INTO coderuns (id, code_id, status, result, extra, params, body, headers, "
            "created_at) VALUES (:id, :code, 'completed', '', '{}', '{}', '', '{}', :at)"),
            [{"id": run_id, "code": code_id, "at": at} for run_id, at in rows])

    def put(index: int) -> None:
        run_id, at = rows[index // LOGS_PER_RUN]
        moment = at + timedelta(milliseconds=index % LOGS_PER_RUN)
        log_id = secrets.token_hex(12)
        key = f"{PREFIX}/logs/{moment:%Y/%m/%d}/{run_id}/{code_id}/{log_id}.json"
        body = {"id": log_id, "run_id": str(run_id), "code_id": str(code_id), "type": "info",
                "content": f"log line {index} " + "x" * 80,
                "created_at": moment.isoformat(), "updated_at": moment.isoformat()}
        client.put_object(Bucket=bucket, Key=key, Body=json.dumps(body).encode())

    started = time.monotonic()
    with ThreadPoolExecutor(readers) as pool:
        list(pool.map(put, range(objects)))
    print(f"wrote {objects:,} objects in {time.monotonic() - started:.0f} s", flush=True)
    return objects


if __name__ == "__main__":
    sys.exit(main())
