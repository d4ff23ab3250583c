"""Cancellation flags in Redis: the API raises one, the worker running the run sees it
within a fraction of a second and kills the container."""

from __future__ import annotations

import redis

KEY = "codeactions:cancel:{run_id}"
TTL_SECONDS = 3600


def request_cancel(client: redis.Redis, run_id: str) -> None:
    client.set(KEY.format(run_id=run_id), "1", ex=TTL_SECONDS)


def is_cancelled(client: redis.Redis, run_id: str) -> bool:
    return bool(client.exists(KEY.format(run_id=run_id)))
