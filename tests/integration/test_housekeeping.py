"""Housekeeping: retention deletes exactly what is old, two beats clean once, and a run
whose worker was SIGKILLed ends `failed` with a reason instead of staying `started`."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker
import redis
import requests
from sqlalchemy import select

from codeactions.local.children import spawn_child, stop_children
from shared.housekeeping import jobs as housekeeping
from shared.logs.model import CodeLog
from shared.runs.model import CodeRun
from tests.integration.helpers import create_code

HELLO = "def Run(engine):\n    engine.result.set('ok')\n"


def make_run(db, s3, code: dict, age: timedelta, logs: int = 2) -> tuple[uuid.UUID, str | None]:  # noqa: ANN001
    """A finished run created `age` ago, with its index rows and its archive object."""
    at = datetime.now(UTC) - age
    run_id = uuid.uuid4()
    code_id = uuid.UUID(code["id"])
    with db.session() as session:
        session.add(CodeRun(id=run_id, code_id=code_id, status="completed", result="ok",
                            extra={}, params={}, body="", headers={}, created_at=at,
                            updated_at=at))
        session.flush()
        for seq in range(logs):
            session.add(CodeLog(run_id=run_id, code_id=code_id, type="info", content=str(seq),
                                seq=seq, created_at=at, updated_at=at))
        session.commit()
    key = None
    if logs:
        key = s3.put_run_logs(str(run_id), str(code_id), at, [{"content": "x"}])
    return run_id, key


def object_exists(s3, key: str) -> bool:  # noqa: ANN001
    return s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=key).get("KeyCount", 0) > 0


def put_legacy(s3, day: datetime) -> str:  # noqa: ANN001
    """The old service's layout: one object per log line."""
    key = f"{s3.prefix}/logs/{day:%Y/%m/%d}/{uuid.uuid4()}/{uuid.uuid4()}/{uuid.uuid4()}.json"
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=b"{}")
    return key


def runs_present(db, run_ids) -> set:  # noqa: ANN001
    with db.session() as session:
        return set(session.scalars(select(CodeRun.id).where(CodeRun.id.in_(run_ids))))


def test_cleaner_deletes_exactly_the_old_runs_logs_and_objects(platform, db, s3):
    settings = platform.settings(cleaner_batch_size=2)  # several batches
    client = redis.Redis.from_url(settings.redis)
    # Old runs other test files wrote (adopted rows, legacy logs) go first, so the counts
    # below are this test's whatever ran before it.
    earlier = housekeeping.run_cleaner(settings, db, client, s3, scheduled=False,
                                       retention_days=30)
    assert not earlier.get("skipped"), earlier
    code = create_code(platform, HELLO, type="flow")
    old = [make_run(db, s3, code, timedelta(days=40 + i)) for i in range(3)]
    old.append(make_run(db, s3, code, timedelta(days=31), logs=0))
    young = [make_run(db, s3, code, timedelta(days=29)), make_run(db, s3, code, timedelta(0))]
    old_legacy = put_legacy(s3, datetime.now(UTC) - timedelta(days=45))
    young_legacy = put_legacy(s3, datetime.now(UTC) - timedelta(days=2))

    result = housekeeping.run_cleaner(settings, db, client, s3, scheduled=False,
                                      retention_days=30)

    assert (result["runs"], result["logs"], result["objects"]) == (4, 6, 4)
    assert runs_present(db, [r for r, _ in old]) == set()
    assert runs_present(db, [r for r, _ in young]) == {r for r, _ in young}
    with db.session() as session:
        kept_logs = session.scalars(select(CodeLog.run_id).where(
            CodeLog.run_id.in_([r for r, _ in old + young]))).all()
    assert sorted(kept_logs) == sorted([young[0][0]] * 2 + [young[1][0]] * 2)
    assert not any(object_exists(s3, key) for _, key in old if key)
    assert not object_exists(s3, old_legacy)
    assert all(object_exists(s3, key) for _, key in young)
    assert object_exists(s3, young_legacy)


def _beat_env(platform, schedule_time: str, tmp: Path, index: int) -> dict[str, str]:  # noqa: ANN001
    return {
        **platform.env,
        "FLOWS_CODE_ACTIONS_CLEANER_SCHEDULE_TIME": schedule_time,
        "FLOWS_CODE_ACTIONS_BEAT_SCHEDULE_FILE": str(tmp / f"beat-{index}" / "schedule"),
        "FLOWS_CODE_ACTIONS_ENVIRONMENT": "production",  # JSON lines
        "FLOWS_CODE_ACTIONS_WORKER_ID": f"beat-test-{index}",
        "FLOWS_CODE_ACTIONS_STUCK_RUN_CHECK_INTERVAL": "3600",
    }


def _events(path: Path) -> list[dict]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for line in lines:
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def test_two_beats_run_the_cleaner_once(platform, db, s3, tmp_path):
    code = create_code(platform, HELLO, type="flow")
    old_run, old_key = make_run(db, s3, code, timedelta(days=90))
    now = datetime.now(UTC)
    fire = (now + timedelta(minutes=1 if now.second < 45 else 2)).strftime("%H:%M")
    outputs = [(tmp_path / f"beat-{i}.log").open("wb") for i in range(2)]
    beats = [spawn_child(["beat"], _beat_env(platform, fire, tmp_path, i), outputs[i])
             for i in range(2)]
    try:
        deadline = time.monotonic() + 200
        events: list[dict] = []
        while time.monotonic() < deadline:
            assert all(beat.poll() is None for beat in beats), "a beat exited"
            events = [e for i in range(2) for e in _events(tmp_path / f"beat-{i}.log")
                      if e.get("event", "").startswith("cleaner.")]
            if len(events) >= 2:
                break
            time.sleep(1)
        time.sleep(2)  # a third cleaning, if there were one, would show now
        events = [e for i in range(2) for e in _events(tmp_path / f"beat-{i}.log")
                  if e.get("event", "").startswith("cleaner.")]
    finally:
        stop_children(beats)
        for output in outputs:
            output.close()
    assert sorted(e["event"] for e in events) == ["cleaner.done", "cleaner.skipped"], events
    done = next(e for e in events if e["event"] == "cleaner.done")
    skipped = next(e for e in events if e["event"] == "cleaner.skipped")
    assert done["result"]["runs"] >= 1 and done["result"]["slot"].endswith(fire)
    assert skipped["claimed_by"] == done["result"]["by"]
    assert runs_present(db, [old_run]) == set() and not object_exists(s3, old_key)
    # Beat's queue has its own exchange: a python run leaves no copy there for beat.
    from shared.messaging.celery_app import make_celery

    run = requests.post(platform.url("/coderun"), json={"code_id": code["id"]}).json()
    done = requests.get(platform.url(f"/coderun/{run['id']}"), params={"wait": 30}).json()
    assert done["status"] == "completed"
    with make_celery(platform.settings()).connection_for_write() as conn:
        _, waiting, _ = conn.default_channel.queue_declare("housekeeping", passive=True)
    assert waiting == 0
    # Every line the beats wrote is a JSON object (production format).
    for i in range(2):
        records = _events(tmp_path / f"beat-{i}.log")
        assert records and all({"time", "level", "logger", "message"} <= r.keys()
                               for r in records)


SLEEPER = "import time\ndef Run(engine):\n    engine.log.info('going to sleep')\n" \
          "    time.sleep(120)\n"
SECRETIVE = ("def Run(engine):\n    engine.log.info(engine.body + engine.params.get('k') +"
             " engine.header.get('X-Api-Key'))\n    engine.result.set(engine.body)\n")


def _wait(predicate, seconds: float, what: str):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_run_whose_worker_was_sigkilled_ends_failed_with_a_reason(
    platform, db, tmp_path, receiver
):
    from shared.messaging.celery_app import make_celery
    from worker.preparation import worker_name

    celery = make_celery(platform.settings())
    session_worker = f"{worker_name(['python'], platform.settings())}@{socket.gethostname()}"
    doomed_id = f"sigkill-{os.getpid()}"
    env = {**platform.env, "FLOWS_CODE_ACTIONS_WORKER_ID": doomed_id,
           "FLOWS_CODE_ACTIONS_ENVIRONMENT": "production"}
    doomed_name = f"{doomed_id}-python"
    log_path = tmp_path / "doomed-worker.log"
    output = log_path.open("wb")
    doomed = spawn_child(["worker", "--language", "python", "--concurrency", "1",
                          "--metrics-port", "0"], env, output)
    beat = None
    # The session's python worker steps aside so the doomed one takes the runs.
    celery.control.cancel_consumer("runs.python", destination=[session_worker], reply=True)
    try:
        _wait(lambda: celery.control.ping(destination=[f"{doomed_name}@{socket.gethostname()}"],
                                          timeout=1.0), 120, "the doomed worker")
        # First a run carrying secrets: the worker's logs name it but never show them.
        secretive = create_code(platform, SECRETIVE)
        answer = requests.post(platform.url(f"/action/endpoint/{secretive['id']}"),
                               params={"k": "PARAMSECRET"}, data="BODYSECRET",
                               headers={"X-Api-Key": "HEADERSECRET"}, timeout=60)
        assert answer.status_code == 200 and answer.text == "BODYSECRET"

        code = create_code(platform, SLEEPER, type="flow", timeout=5)
        run = requests.post(platform.url("/coderun"), json={
            "code_id": code["id"], "callback_url": receiver.url()}).json()
        run_id = uuid.UUID(run["id"])

        def started_by_doomed() -> bool:
            with db.session() as session:
                row = session.get(CodeRun, run_id)
                return row.status == "started" and row.worker == doomed_name

        _wait(started_by_doomed, 60, "the doomed worker to start the run")
        time.sleep(1)
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(10)
    finally:
        celery.control.add_consumer("runs.python", destination=[session_worker], reply=True)
    try:
        # Redelivered to the session's worker, the task finds the run claimed: still started.
        time.sleep(2)
        with db.session() as session:
            assert session.get(CodeRun, run_id).status == "started"
        beat_env = {**platform.env, "FLOWS_CODE_ACTIONS_STUCK_RUN_MARGIN": "2",
                    "FLOWS_CODE_ACTIONS_STUCK_RUN_CHECK_INTERVAL": "1",
                    "FLOWS_CODE_ACTIONS_BEAT_SCHEDULE_FILE": str(tmp_path / "beat" / "schedule"),
                    "FLOWS_CODE_ACTIONS_WORKER_ID": f"reaper-{os.getpid()}"}
        beat = spawn_child(["beat"], beat_env)
        ended = _wait(lambda: (r := requests.get(platform.url(f"/coderun/{run_id}")).json())
                      ["status"] != "started" and r, 90, "the reaper")
        assert ended["status"] == "failed"
        assert "lost" in ended["result"] and doomed_name in ended["result"]
        with db.session() as session:
            row = session.get(CodeRun, run_id)
            assert row.exit_reason == "worker_lost" and row.finished_at is not None
        logs = requests.get(platform.url("/codelog"), params={"run_id": str(run_id)}).json()
        assert [(e["type"], "lost" in e["content"]) for e in logs["data"]] == [("error", True)]
        # Its caller hears of the end too: the reaper schedules the callback.
        _wait(lambda: receiver.requests, 30, "the lost run's callback")
        posted = json.loads(receiver.requests[0]["body"])
        assert posted["id"] == str(run_id) and posted["exit_reason"] == "worker_lost"
    finally:
        if beat is not None:
            stop_children([beat])
        output.close()
        for container in docker.from_env().containers.list(
                all=True, filters={"label": f"codeactions.worker={doomed_name}"},
                ignore_removed=True):
            container.remove(force=True)

    # The doomed worker logged JSON lines naming runs and codes, and no secret at all.
    text = log_path.read_text()
    for secret in ("PARAMSECRET", "BODYSECRET", "HEADERSECRET"):
        assert secret not in text
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert any(r.get("code_id") == secretive["id"] and r.get("run_id") for r in records)
