"""The per-project concurrency cap end to end: a worker started with
FLOWS_CODE_ACTIONS_PROJECT_MAX_CONCURRENT_RUNS=1 and four threads runs one project's runs one
at a time, while another project's run goes ahead. The worker and API use a RabbitMQ node of
their own, so the session's uncapped worker never takes these runs."""

from __future__ import annotations

import socket
import time
import uuid

import pytest
from sqlalchemy import select

from api.app import create_app
from shared.runs.model import CodeRun
from tests.integration.event_broker import eventually
from tests.integration.helpers import create_code

SLEEPY = "import time\ndef Run(engine):\n    time.sleep(2)\n    engine.result.set('done')\n"
QUICK = "def Run(engine):\n    engine.result.set('quick')\n"


@pytest.fixture(scope="module")
def capped(platform, private_broker):  # noqa: ANN001, ANN201
    """An API client whose runs go to a capped python worker."""
    from codeactions.local.children import spawn_child, stop_children
    from shared.messaging.celery_app import make_celery
    from worker.preparation import worker_name

    env = {**platform.env, "FLOWS_CODE_ACTIONS_RABBITMQ_URL": private_broker.url,
           "FLOWS_CODE_ACTIONS_PROJECT_MAX_CONCURRENT_RUNS": "1",
           # Its own id: it must not remove the session worker's sandboxes as leftovers.
           "FLOWS_CODE_ACTIONS_WORKER_ID": platform.env["FLOWS_CODE_ACTIONS_WORKER_ID"] + "-cap"}
    worker = spawn_child(["worker", "--language", "python", "--concurrency", "4"], env)
    settings = platform.settings(rabbitmq_url=private_broker.url,
                                 worker_id=env["FLOWS_CODE_ACTIONS_WORKER_ID"])
    app = create_app(settings)
    try:
        destination = [f"{worker_name(['python'], settings)}@{socket.gethostname()}"]
        control = make_celery(settings).control
        eventually(lambda: worker.poll() is None and control.ping(destination=destination,
                                                                   timeout=1.0), timeout=180)
        yield app.test_client()
    finally:
        stop_children([worker])
        app.extensions["codeactions"].db.dispose()


def test_one_projects_runs_execute_one_at_a_time(platform, capped, db):  # noqa: ANN001
    capped_project, other_project = str(uuid.uuid4()), str(uuid.uuid4())
    sleepy = create_code(platform, SLEEPY, type="flow", project_uuid=capped_project)
    quick = create_code(platform, QUICK, type="flow", project_uuid=other_project)
    line = [capped.post("/coderun", json={"code_id": sleepy["id"]}).get_json()["id"]
            for _ in range(3)]
    time.sleep(0.5)
    other = capped.post("/coderun", json={"code_id": quick["id"]}).get_json()["id"]

    most_at_once, other_done_while_line_waited = 0, False
    ids = [uuid.UUID(run_id) for run_id in line]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with db.session() as session:
            statuses = dict(session.execute(
                select(CodeRun.id, CodeRun.status).where(CodeRun.id.in_(ids))).all())
            other_status = session.get(CodeRun, uuid.UUID(other)).status
        most_at_once = max(most_at_once, list(statuses.values()).count("started"))
        if other_status == "completed" and "queued" in statuses.values():
            other_done_while_line_waited = True
        if all(status in ("completed", "failed") for status in statuses.values()):
            break
        time.sleep(0.05)
    assert list(statuses.values()) == ["completed"] * 3
    assert most_at_once == 1
    assert other_done_while_line_waited  # the cap held one project, not the worker
    with db.session() as session:
        runs = sorted(session.scalars(select(CodeRun).where(CodeRun.id.in_(ids))),
                      key=lambda run: run.started_at)
    for earlier, later in zip(runs, runs[1:], strict=False):
        assert later.started_at >= earlier.finished_at  # one at a time, as stored
