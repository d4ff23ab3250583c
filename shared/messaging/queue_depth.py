"""How many runs wait in a language's queue: the signal for back-pressure.

Read with a passive declare (one broker round trip) on a connection the process keeps,
cached briefly so a burst of requests costs one look. (A connection per look cost the API
an AMQP handshake every half second, 8 % of its time on sync calls, and the broker more.)
"""

from __future__ import annotations

import os
import threading
import time

import kombu
from celery import Celery

from shared.messaging.tasks import run_queue


class QueueDepth:
    def __init__(self, celery: Celery, cache_seconds: float = 0.5) -> None:
        self.celery = celery
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()
        self._looking = threading.Lock()  # one look at a time, on the kept connection
        self._connection: kombu.Connection | None = None
        self._pid: int | None = None  # a forked child opens its own

    def ready_messages(self, language: str) -> int:
        ready = self._cached(language)
        if ready is not None:
            return ready
        with self._looking:
            ready = self._cached(language)  # another thread has just looked
            if ready is None:
                ready = self._look(language)
                with self._lock:
                    self._cache[language] = (time.monotonic(), ready)
        return ready

    def _cached(self, language: str) -> int | None:
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
                channel = connection.default_channel
                _, ready, _ = channel.queue_declare(queue=run_queue(language), passive=True)
                return ready
            except Exception:
                self._connection = None
                try:
                    connection.release()
                except Exception:  # noqa: S110 - it is being dropped either way
                    pass
                if fresh:
                    raise
