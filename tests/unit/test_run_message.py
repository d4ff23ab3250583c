"""A run's task message is the one Celery's `send_task` would publish (the worker's Celery
consumer reads it): built by hand on the API's hot path, checked here against Celery's own
builder, so a Celery upgrade that changes its protocol shows."""

from __future__ import annotations

import uuid

from shared.messaging import dispatch
from shared.messaging.celery_app import make_celery
from shared.messaging.tasks import RUN_CODE
from shared.settings import load_settings


def test_a_run_message_is_what_send_task_builds():
    celery = make_celery(load_settings())
    run_id, task_id = uuid.uuid4(), str(uuid.uuid4())
    headers, body = dispatch.run_message(run_id, task_id)
    expected = celery.amqp.as_task_v2(
        task_id, RUN_CODE, args=[str(run_id)], ignore_result=celery.conf.task_ignore_result)
    # `origin` names the sender (pid@host); Celery's own says the same in another form.
    assert headers == {**expected.headers, "origin": headers["origin"]}
    assert headers["origin"].partition("@")[0].isdigit()
    assert body == expected.body
    assert expected.properties == {"correlation_id": task_id, "reply_to": ""}
