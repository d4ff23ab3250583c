"""`codeactions import-logs`: the Go service's one-object-per-log S3 layout (in the real S3
server, moto) into our log index, then `GET /codelog` shows them."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
import requests
from sqlalchemy import create_engine, text

from tests.conftest import REPO_ROOT, Platform
from tests.integration import legacy_go_service as legacy

PREFIX = "codeactions"


@dataclass
class OldLog:
    key: str
    id: str
    run_id: str
    content: str
    created_at: datetime


@dataclass
class Bucket:
    name: str
    logs: list[OldLog] = field(default_factory=list)  # every object that should be imported


def go_time(moment: datetime) -> str:
    """Go's RFC 3339 with nanoseconds and `Z`."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "789Z"


def put_log(s3, bucket: Bucket, run_ref: str, code_ref: str, log_id: str,  # noqa: ANN001
            moment: datetime, content: str, *, repeated_bucket: bool = False,
            python_style: bool = False, log_type: str = "info") -> OldLog:
    root = f"{bucket.name}/{PREFIX}" if repeated_bucket else PREFIX
    key = f"{root}/logs/{moment:%Y/%m/%d}/{run_ref}/{code_ref}/{log_id}.json"
    stamp = moment.isoformat() if python_style else go_time(moment)
    body = {"id": log_id, "run_id": run_ref, "code_id": code_ref, "type": log_type,
            "content": content, "created_at": stamp, "updated_at": stamp}
    s3.client.put_object(Bucket=bucket.name, Key=key, Body=json.dumps(body).encode())
    return OldLog(key, log_id, run_ref, content, moment)


@pytest.fixture(scope="module")
def adopted(platform: Platform) -> Iterator[tuple[str, legacy.LegacyWorld]]:
    with legacy.adopted_database(platform) as state:
        yield state


@pytest.fixture(scope="module")
def bucket(adopted, s3) -> Bucket:  # noqa: ANN001
    """Old objects of every shape: UUID and ObjectID log ids, code ids as either, the two
    prefixes, a run called by its ObjectID, a deleted run's log, a broken object, and one
    of our own archive objects."""
    _, world = adopted
    bucket = Bucket(f"old-logs-{uuid.uuid4().hex[:8]}")
    s3.client.create_bucket(Bucket=bucket.name)
    run, code = world.runs["by_object_id"], world.codes["migrated"]
    for n in range(3):  # written by the Go service: ObjectID ids, the code as the caller named it
        bucket.logs.append(put_log(s3, bucket, run.id, code.mongo_object_id, secrets.token_hex(12),
                                   run.created_at + timedelta(milliseconds=10 * n), f"go {n}"))
    for n in range(2):  # written by the old Python engine: UUID ids, Python's isoformat
        bucket.logs.append(put_log(
            s3, bucket, run.id, code.id, str(uuid.uuid4()),
            run.created_at + timedelta(milliseconds=100 + n), f"py {n}", python_style=True,
            log_type="debug"))
    bucket.logs.append(put_log(  # a mongo-era run, named by its ObjectID
        s3, bucket, run.mongo_object_id, code.mongo_object_id, secrets.token_hex(12),
        run.created_at + timedelta(milliseconds=200), "by run ObjectID", log_type="error"))
    older = world.runs["older"]
    for n in range(2):  # the older layout, the bucket's name repeated in the key
        bucket.logs.append(put_log(s3, bucket, older.id, code.id, str(uuid.uuid4()),
                                   older.created_at + timedelta(seconds=n), f"older {n}",
                                   repeated_bucket=True))
    orphan = world.runs["orphan"]  # its code was deleted; three days ago, for the window
    three_days_ago = datetime.now(UTC) - timedelta(days=3)
    bucket.logs.append(put_log(s3, bucket, orphan.id, world.deleted_code_id,
                               secrets.token_hex(12), three_days_ago, "orphan's log"))
    put_log(s3, bucket, str(uuid.uuid4()), code.id, str(uuid.uuid4()), run.created_at,
            "its run was deleted")
    day = f"{run.created_at:%Y/%m/%d}"
    folder = f"{PREFIX}/logs/{day}/{run.id}"
    s3.client.put_object(Bucket=bucket.name, Key=f"{folder}/x/broken.json", Body=b"{not json")
    s3.client.put_object(Bucket=bucket.name, Key=f"{folder}/{code.id}/logs.json", Body=b"[]")
    return bucket


@dataclass
class Imports:
    window: subprocess.CompletedProcess
    full: subprocess.CompletedProcess
    again: subprocess.CompletedProcess
    restart: subprocess.CompletedProcess
    api: str


@pytest.fixture(scope="module")
def imports(platform: Platform, adopted, bucket: Bucket) -> Iterator[Imports]:  # noqa: ANN001
    url, _ = adopted
    env = legacy.env_for(platform, url)
    three_days_ago = (datetime.now(UTC) - timedelta(days=3)).date().isoformat()
    args = ("import-logs", "--bucket", bucket.name, "--prefix", PREFIX, "--page-size", "3")
    window = legacy.run_cli(env, *args, "--since", three_days_ago, "--until", three_days_ago)
    full = legacy.run_cli(env, *args)
    again = legacy.run_cli(env, *args)
    restart = legacy.run_cli(env, *args, "--restart")
    with legacy.serve_api(platform, url) as api:
        yield Imports(window, full, again, restart, api)


def summary(output: str) -> str:
    """The closing line (progress lines show running totals)."""
    lines = [line for line in output.splitlines() if line.startswith("import-logs finished:")]
    assert len(lines) == 1, output
    return lines[0]


def count_logs(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as connection:
        total = connection.execute(text("SELECT count(*) FROM codelogs")).scalar_one()
    engine.dispose()
    return total


def test_a_window_imports_only_its_days(imports: Imports):
    assert summary(imports.window.stdout).startswith(
        "import-logs finished: 1 objects scanned, 1 imported"), imports.window.stderr


def test_every_old_log_is_imported_and_the_rest_accounted_for(imports: Imports, bucket: Bucket):
    out = imports.full.stdout
    # The windowed day was imported already: the full scan finds it there.
    assert summary(out).startswith(
            f"import-logs finished: {len(bucket.logs) + 3:,} objects scanned, "
            f"{len(bucket.logs) - 1} imported, 1 already there, 1 skipped (run no longer "
            "exists), 1 skipped (this platform's own archives), 1 errors"), out
    assert "broken.json: not JSON" in out
    # progress per prefix, both layouts
    assert f"s3://{bucket.name}/{PREFIX}/logs/: " in out
    assert f"s3://{bucket.name}/{bucket.name}/{PREFIX}/logs/: " in out
    assert imports.full.returncode == 1  # an object could not be read: the operator is told


def test_logs_show_by_run_by_code_and_by_old_id(imports: Imports, adopted, bucket: Bucket):  # noqa: ANN001
    _, world = adopted
    run, code = world.runs["by_object_id"], world.codes["migrated"]
    mine = [log for log in bucket.logs if log.run_id in (run.id, run.mongo_object_id)]
    for run_key in (run.id, run.mongo_object_id):
        page = requests.get(imports.api + "/codelog",
                            params={"run_id": run_key, "order": "asc"}).json()
        assert page["total"] == len(mine) == 6
        # call order: their times, oldest first
        assert [entry["content"] for entry in page["data"]] == [
            log.content for log in sorted(mine, key=lambda log: log.created_at)]
        assert {entry["code_id"] for entry in page["data"]} == {code.id}
    older = [log for log in bucket.logs if log.run_id == world.runs["older"].id]
    for code_key in (code.id, code.mongo_object_id):
        page = requests.get(imports.api + "/codelog", params={"code_id": code_key}).json()
        assert page["total"] == len(mine) + len(older)
        times = [datetime.fromisoformat(entry["created_at"]) for entry in page["data"]]
        assert times == sorted(times, reverse=True)
    for log in bucket.logs:
        one = requests.get(imports.api + f"/codelog/{log.id}")
        assert one.status_code == 200, (log, one.text)
        body = one.json()
        assert body["content"] == log.content
        assert datetime.fromisoformat(body["created_at"]) == log.created_at
        if len(log.id) == 24:
            assert body["mongo_object_id"] == log.id
        else:
            assert body["id"] == log.id and body["mongo_object_id"] is None
    # the orphan run's log, by its deleted code's ObjectID
    page = requests.get(imports.api + "/codelog",
                        params={"code_id": world.deleted_code_mongo_id}).json()
    assert [entry["content"] for entry in page["data"]] == ["orphan's log"]


def test_a_second_import_adds_nothing(imports: Imports, adopted, bucket: Bucket):  # noqa: ANN001
    url, _ = adopted
    assert summary(imports.again.stdout).startswith(
        "import-logs finished: 0 objects scanned, 0 imported")
    assert imports.again.returncode == 0, imports.again.stdout
    restart = imports.restart.stdout
    assert f"0 imported, {len(bucket.logs)} already there" in summary(restart), restart
    assert count_logs(url) == len(bucket.logs)


def test_an_interrupted_import_continues_where_it_stopped(platform: Platform, s3):  # noqa: ANN001
    with legacy.adopted_database(platform) as (url, world):
        bucket = Bucket(f"old-logs-{uuid.uuid4().hex[:8]}")
        s3.client.create_bucket(Bucket=bucket.name)
        run = world.runs["older"]
        for n in range(400):
            bucket.logs.append(put_log(s3, bucket, run.id, run.code_id, secrets.token_hex(12),
                                       run.created_at + timedelta(milliseconds=n), f"line {n}"))
        env = legacy.env_for(platform, url)
        command = [sys.executable, "-m", "codeactions.cli", "import-logs", "--bucket", bucket.name,
                   "--prefix", PREFIX, "--page-size", "10", "--readers", "2"]
        first = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120
        while count_logs(url) < 50 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        done_before = count_logs(url)
        assert 0 < done_before < len(bucket.logs), done_before
        second = legacy.run_cli(env, *command[3:])
        assert second.returncode == 0, second.stdout + second.stderr
        assert "continuing after " in second.stdout
        # nothing twice: the resumed run imported exactly what the first had not
        assert f"{len(bucket.logs) - done_before:,} imported, 0 already there" in summary(
            second.stdout)
        assert count_logs(url) == len(bucket.logs)
        engine = create_engine(url)
        with engine.connect() as connection:
            contents = connection.execute(text(
                "SELECT content FROM codelogs ORDER BY seq")).scalars().all()
        engine.dispose()
        assert contents == [f"line {n}" for n in range(400)]
