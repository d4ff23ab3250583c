"""Tells Redis this worker is alive and how busy it is (see `shared.observability.worker_registry`).

Celery sends its own worker heartbeat every 2 s from the consumer's event loop, only while
connected to the broker. We note the time of the last one, and a daemon thread writes to
Redis every few seconds if it is recent: a worker cut off from the broker, hung, or killed
stops being counted as live within the TTL. Busy slots are counted by task signals.
"""

from __future__ import annotations

import logging
import threading
import time

from celery import Celery, signals

from shared.messaging.tasks import RUN_CODE
from shared.settings import Settings

log = logging.getLogger(__name__)

WRITE_EVERY = 5.0


class Heartbeat:
    def __init__(self, settings: Settings, name: str, languages: list[str], pool: int) -> None:
        self.settings = settings
        self.name = name
        self.languages = languages
        self.pool = pool
        self._busy = 0
        self._last_heart = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> int:
        with self._lock:
            return self._busy

    def connect(self, app: Celery) -> None:
        """Hook Celery's signals (before the worker starts: Celery reads them at start)."""
        signals.heartbeat_sent.connect(self._on_heart, weak=False)
        signals.worker_ready.connect(self._on_ready, weak=False)
        signals.worker_shutting_down.connect(self._on_shutdown, weak=False)
        signals.task_prerun.connect(self._on_task_start, weak=False)
        signals.task_postrun.connect(self._on_task_end, weak=False)

    def _on_heart(self, **_: object) -> None:
        self._last_heart = time.monotonic()

    def _on_task_start(self, sender=None, **_: object) -> None:  # noqa: ANN001
        if getattr(sender, "name", None) == RUN_CODE:
            with self._lock:
                self._busy += 1

    def _on_task_end(self, sender=None, **_: object) -> None:  # noqa: ANN001
        if getattr(sender, "name", None) == RUN_CODE:
            with self._lock:
                self._busy = max(0, self._busy - 1)

    def _on_ready(self, **_: object) -> None:
        self._last_heart = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        self._thread.start()

    def _on_shutdown(self, **_: object) -> None:
        self._stop.set()
        try:
            from shared.observability import worker_registry

            worker_registry.forget(self._client(), self.name, self.languages)
        except Exception as exc:
            log.debug("could not leave the worker registry: %s", exc)

    def _client(self):  # noqa: ANN202 - redis.Redis
        import redis

        if not hasattr(self, "_redis"):
            self._redis = redis.Redis.from_url(self.settings.redis, socket_timeout=3)
        return self._redis

    def _loop(self) -> None:
        from shared.observability import worker_registry

        ttl = self.settings.worker_heartbeat_ttl
        while not self._stop.is_set():
            # No recent Celery heartbeat: the consumer is cut off; let the entry expire.
            if time.monotonic() - self._last_heart <= ttl / 2:
                try:
                    worker_registry.beat(
                        self._client(), self.name, self.languages, self.pool, self.busy, ttl
                    )
                except Exception as exc:
                    log.warning("heartbeat to Redis failed: %s", exc)
            self._stop.wait(min(WRITE_EVERY, ttl / 3))
