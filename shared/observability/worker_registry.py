"""Which workers are alive, per language queue: heartbeats in Redis.

Each worker writes a heartbeat every few seconds while its Celery consumer is connected to
the broker (it rides on Celery's own worker heartbeat). `/health` asks whether each language
has a live worker, and the API's metrics add up the pool sizes and busy slots. One sorted
set per language (member: worker name, score: last beat) keeps that one query each.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

QUEUE_WORKERS = "codeactions:workers:{language}"
WORKER_INFO = "codeactions:worker:{name}"


@dataclass(frozen=True)
class LiveWorker:
    name: str
    pool_size: int
    busy: int


def beat(
    client: redis.Redis, name: str, languages: list[str], pool_size: int, busy: int, ttl: float
) -> None:
    now = time.time()
    with client.pipeline(transaction=False) as pipe:
        for language in languages:
            pipe.zadd(QUEUE_WORKERS.format(language=language), {name: now})
        info = WORKER_INFO.format(name=name)
        pipe.hset(info, mapping={"pool_size": pool_size, "busy": busy, "at": now})
        pipe.expire(info, max(1, int(ttl)))
        pipe.execute()


def forget(client: redis.Redis, name: str, languages: list[str]) -> None:
    """A worker shutting down cleanly leaves at once instead of timing out."""
    with client.pipeline(transaction=False) as pipe:
        for language in languages:
            pipe.zrem(QUEUE_WORKERS.format(language=language), name)
        pipe.delete(WORKER_INFO.format(name=name))
        pipe.execute()


def live(client: redis.Redis, language: str, ttl: float) -> list[LiveWorker]:
    """Workers of `language` whose last heartbeat is younger than `ttl` seconds."""
    key = QUEUE_WORKERS.format(language=language)
    now = time.time()
    with client.pipeline(transaction=False) as pipe:
        pipe.zremrangebyscore(key, "-inf", now - ttl * 10)  # long gone: forget them
        pipe.zrangebyscore(key, now - ttl, "+inf")
        _, names = pipe.execute()
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    if not names:
        return []
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hmget(WORKER_INFO.format(name=name), "pool_size", "busy")
        infos = pipe.execute()
    return [
        LiveWorker(name=name, pool_size=int(pool or 0), busy=int(busy or 0))
        for name, (pool, busy) in zip(names, infos, strict=True)
    ]
