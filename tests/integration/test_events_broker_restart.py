"""The events consumer survives a broker restart mid-stream: no event lost, none applied
out of turn. Uses a RabbitMQ node of its own, so the session's stack is never restarted."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from shared.access.permission import UserPermission
from tests.integration.event_broker import (
    ConsumerProcess,
    Publisher,
    eventually,
)

USERS = 400


def test_a_broker_restart_mid_stream_loses_nothing(platform, db, private_broker, tmp_path):  # noqa: ANN001
    env = {**platform.env, "FLOWS_CODE_ACTIONS_RABBITMQ_URL": private_broker.url}
    consumer = ConsumerProcess(env, tmp_path / "consumer.log")
    project = uuid.uuid4()
    exchange, queue = "permissions.topic", "code-actions-permissions"
    try:
        publisher = Publisher(private_broker.url)
        eventually(lambda: publisher.consumers(queue), timeout=60)

        # Per user: create as viewer, promote, and for every third user delete. Replaying
        # an earlier event after a later one would leave a wrong role or a deleted row.
        def events(user: int) -> list[dict]:
            email = f"restart.{user}@example.com"
            base = {"project": str(project), "user": email}
            stream = [{**base, "action": "create", "role": 1},
                      {**base, "action": "update", "role": 3}]
            return stream + ([{**base, "action": "delete"}] if user % 3 == 0 else [])

        for user in range(USERS):
            for event in events(user):
                publisher.publish(exchange, event)
        publisher.close()

        def applied() -> int:
            with db.session() as session:
                return session.scalar(select(func.count()).select_from(UserPermission).where(
                    UserPermission.project_uuid == project))

        eventually(lambda: applied() >= 20, timeout=60, every=0.05)
        private_broker.stop()  # mid-stream: most of the events still wait in the queue
        stopped_at = applied()
        private_broker.start()

        publisher = Publisher(private_broker.url)
        for user in range(USERS, USERS + 50):  # events published after the restart too
            for event in events(user):
                publisher.publish(exchange, event)

        expected = {f"restart.{user}@example.com": 3
                    for user in range(USERS + 50) if user % 3 != 0}

        def state() -> dict[str, int]:
            with db.session() as session:
                return dict(session.execute(
                    select(UserPermission.email, UserPermission.role)
                    .where(UserPermission.project_uuid == project)).all())

        eventually(lambda: state() == expected, timeout=120, every=0.5)
        assert stopped_at < len(expected), "the restart came after the stream had ended"
        assert publisher.drain(queue + ".dead-letter") == []
        assert consumer.process.poll() is None  # it reconnected rather than exiting
        assert "broker connection lost" in consumer.output()  # it did see the restart
        publisher.close()
    finally:
        assert consumer.stop() == 0, consumer.output()
