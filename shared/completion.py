"""Completion signal: the worker publishes when a run ends; whoever waits is woken at once.

Redis pub/sub, so the API never polls the database. Subscribe *before* enqueueing, and
re-read the run once after a timeout: a message lost with a dropped connection then costs
latency, never a wrong answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

CHANNEL = "codeactions:run-done:{run_id}"


def channel(run_id: str) -> str:
    return CHANNEL.format(run_id=run_id)


def publish_done(client: redis.Redis, run_id: str, status: str) -> None:
    client.publish(channel(run_id), status)


class CompletionWaiter:
    """Subscribe on creation; `wait()` returns the final status or None on timeout."""

    def __init__(self, client: redis.Redis, run_id: str) -> None:
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(channel(run_id))

    def wait(
        self, timeout: float, should_stop: Callable[[], bool] | None = None
    ) -> str | None:
        """`should_stop` is polled a few times a second; True ends the wait (None)."""
        deadline = time.monotonic() + timeout
        step = 0.25 if should_stop else 1.0
        while (left := deadline - time.monotonic()) > 0:
            if should_stop is not None and should_stop():
                return None
            message = self._pubsub.get_message(timeout=min(left, step))
            if message and message.get("type") == "message":
                data = message["data"]
                return data.decode() if isinstance(data, bytes) else str(data)
        return None

    def close(self) -> None:
        try:
            self._pubsub.close()
        except redis.RedisError:
            pass

    def __enter__(self) -> CompletionWaiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
