"""How many runs wait in a language's queue: the signal for back-pressure.

Read with a passive declare on a connection the process keeps, cached briefly so a burst of
requests costs one look. (A connection per look cost the API an AMQP handshake every half
second, 8 % of its time on sync calls, and the broker more.) A failed look is cached too, and
nobody waits long for another thread's look: while the broker is away, requests go on to the
enqueue, which answers 503 by itself.
"""

from __future__ import annotations

import os
import threading
import time

import kombu
from celery import Celery

from shared.messaging.tasks import run_queue

#: Longest a request waits for another thread's look before it goes on without the depth.
LOOK_WAIT_SECONDS = 2.5


class DepthUnknown(Exception):
    """The broker did not tell (down, or the queue does not exist yet)."""


class QueueMissing(DepthUnknown):
    """The broker answered: the queue does not exist (yet); another queue's depth may
    still be told."""


class QueueDepth:
    def __init__(self, celery: Celery, cache_seconds: float = 0.5) -> None:
        self.celery = celery
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, int | Exception]] = {}
        self._lock = threading.Lock()
        self._looking = threading.Lock()  # one look at a time, on the kept connection
        self._connection: kombu.Connection | None = None
        self._pid: int | None = None  # a forked child opens its own

    def ready_messages(self, language: str) -> int:
        """Raises `DepthUnknown` (or what the broker raised) when it cannot be told."""
        cached = self._cached(language)
        if cached is None:
            if not self._looking.acquire(timeout=LOOK_WAIT_SECONDS):
                raise DepthUnknown("another look at the broker is still waiting")
            try:
                cached = self._cached(language)  # another thread has just looked
                if cached is None:
                    try:
                        cached = self._look(language)
                    except Exception as exc:
                        cached = exc
                    with self._lock:
                        self._cache[language] = (time.monotonic(), cached)
            finally:
                self._looking.release()
        if isinstance(cached, QueueMissing):
            raise QueueMissing(str(cached)) from cached.__cause__
        if isinstance(cached, Exception):
            raise DepthUnknown(str(cached)) from cached
        return cached

    def _cached(self, language: str) -> int | Exception | None:
        with self._lock:
            cached = self._cache.get(language)
        if cached and time.monotonic() - cached[0] < self.cache_seconds:
            return cached[1]
        return None

    def _look(self, language: str) -> int:
        """A kept connection may have died since its last look: then one more try, on a new
        one (a new one that fails says the broker is down: no second try)."""
        while True:
            connection = self._connection
            fresh = connection is None or self._pid != os.getpid()
            if connection is None or fresh:
                # No heartbeats: nothing reads this connection between looks.
                connection = self._connection = self.celery.connection_for_write(heartbeat=0)
                self._pid = os.getpid()
            try:
                # Fail fast when the broker is down (the default retries for ~20 s).
                connection.ensure_connection(max_retries=1, timeout=2)
                # A channel per look: a missing queue (404) closes only that channel.
                channel = connection.channel()
                try:
                    _, ready, _ = channel.queue_declare(queue=run_queue(language),
                                                        passive=True)
                finally:
                    channel.close()
                return ready
            except connection.channel_errors as exc:
                # The connection is fine; the queue is not there (yet).
                raise QueueMissing(str(exc)) from exc
            except Exception:
                self._connection = None
                connection.collect()  # dropped without network I/O
                if fresh:
                    raise
