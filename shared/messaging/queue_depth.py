"""How many runs wait in a language's queue: the signal for back-pressure.

Read with a passive declare (one broker round trip), cached briefly so a burst of requests
costs one look.
"""

from __future__ import annotations

import threading
import time

from celery import Celery

from shared.messaging.tasks import run_queue


class QueueDepth:
    def __init__(self, celery: Celery, cache_seconds: float = 0.5) -> None:
        self.celery = celery
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def ready_messages(self, language: str) -> int:
        with self._lock:
            cached = self._cache.get(language)
            if cached and time.monotonic() - cached[0] < self.cache_seconds:
                return cached[1]
        with self.celery.connection_for_write() as conn:
            # Fail fast when the broker is down (the default retries for ~20 s).
            conn.ensure_connection(max_retries=1, timeout=2)
            channel = conn.default_channel
            _, ready, _ = channel.queue_declare(queue=run_queue(language), passive=True)
        with self._lock:
            self._cache[language] = (time.monotonic(), ready)
        return ready
