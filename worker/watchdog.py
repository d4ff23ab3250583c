"""A worker that stops consuming while its queues hold work ends itself, so its supervisor
(`make run`'s, or Kubernetes) starts a fresh one.

Celery's consumer has hung after broker restarts (celery/celery#9512; the prefetch fix in
shared/messaging/celery_app.py avoids the known case). A consumer with a free slot and
messages ready in its queue receives one within milliseconds; if none arrives for
`patience` seconds while that holds, the consumer is stuck, whatever the cause.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

from celery import Celery, signals

log = logging.getLogger(__name__)

CHECK_EVERY = 10.0
PATIENCE = 45.0
#: After asking Celery to stop, how long before the process is ended outright.
EXIT_GRACE = 20.0


class ConsumptionWatchdog:
    def __init__(
        self,
        ready_messages: Callable[[], int],
        concurrency: int,
        patience: float = PATIENCE,
        on_stuck: Callable[[], None] | None = None,
    ) -> None:
        self._ready_messages = ready_messages
        self._concurrency = concurrency
        self._in_flight = 0  # tasks of any kind (runs, callback deliveries) being executed
        self._lock = threading.Lock()
        self._patience = patience
        self._on_stuck = on_stuck or _restart_process
        self._last_received = time.monotonic()
        self._stalled_since: float | None = None
        self._fired = False

    def connect(self, app: Celery) -> None:
        signals.task_received.connect(self._received, weak=False)
        signals.task_prerun.connect(self._task_started, weak=False)
        signals.task_postrun.connect(self._task_ended, weak=False)

    def _received(self, **_: object) -> None:
        self._last_received = time.monotonic()

    def _task_started(self, **_: object) -> None:
        with self._lock:
            self._in_flight += 1

    def _task_ended(self, **_: object) -> None:
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)

    def _free_slots(self) -> int:
        with self._lock:
            return self._concurrency - self._in_flight

    def check(self, now: float) -> None:
        if self._fired:
            return
        try:
            waiting = self._ready_messages() > 0
        except Exception:  # the broker is away: nothing to consume, nothing to judge
            self._stalled_since = None
            return
        if not waiting or self._free_slots() <= 0:
            self._stalled_since = None
            return
        if self._stalled_since is None or self._last_received > self._stalled_since:
            self._stalled_since = now
            return
        if now - self._stalled_since >= self._patience:
            self._fired = True
            log.critical("the worker stopped consuming: runs wait in its queues and it has "
                         "free slots, but it received nothing for %.0f s; restarting",
                         now - self._stalled_since)
            self._on_stuck()


def _restart_process() -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # a warm shutdown first (containers removed)
    timer = threading.Timer(EXIT_GRACE, os._exit, args=(3,))
    timer.daemon = True
    timer.start()
