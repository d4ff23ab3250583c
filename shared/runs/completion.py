"""Completion signal: the worker publishes when a run ends; whoever waits is woken at once.

Redis pub/sub, so the API never polls the database. Each process keeps one subscription (to
every run's channel, by pattern) on one connection, read by one thread that wakes the
waiting requests: a sync call costs no Redis connection and no subscribe round trip of its
own. A waiter registers before the run is enqueued, so the signal cannot fire before anyone
listens; re-read the run once after a timeout: a message lost with a dropped connection then
costs latency, never a wrong answer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import redis

log = logging.getLogger(__name__)

CHANNEL = "codeactions:run-done:{run_id}"
_PREFIX = CHANNEL.format(run_id="")
_PATTERN = _PREFIX + "*"
SUBSCRIBE_WAIT = 5.0


def channel(run_id: str) -> str:
    return CHANNEL.format(run_id=run_id)


def publish_done(client: redis.Redis, run_id: str, status: str) -> None:
    client.publish(channel(run_id), status)


class _Waiting:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.status: str | None = None


class CompletionListener:
    """This process's one subscription to every run's completion channel."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._waiting: dict[str, list[_Waiting]] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="run-completions", daemon=True)
        self._thread.start()

    def register(self, run_id: str) -> _Waiting:
        """Listen for `run_id`; raises redis.ConnectionError if Redis cannot be reached."""
        if not self._subscribed.wait(SUBSCRIBE_WAIT):
            raise redis.ConnectionError("not subscribed to run completions (Redis unreachable)")
        waiting = _Waiting()
        with self._lock:
            self._waiting.setdefault(run_id, []).append(waiting)
        return waiting

    def unregister(self, run_id: str, waiting: _Waiting) -> None:
        with self._lock:
            waiters = self._waiting.get(run_id)
            if waiters and waiting in waiters:
                waiters.remove(waiting)
                if not waiters:
                    del self._waiting[run_id]

    def _listen(self) -> None:
        while True:
            pubsub = self._client.pubsub()
            try:
                pubsub.psubscribe(_PATTERN)
                # Subscribed once Redis confirms: a run enqueued after that cannot be missed.
                confirmed = pubsub.get_message(timeout=SUBSCRIBE_WAIT)
                if not confirmed or confirmed.get("type") != "psubscribe":
                    raise redis.ConnectionError("no subscription confirmation")
                self._subscribed.set()
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "pmessage":
                        self._deliver(message)
            except (redis.RedisError, OSError) as exc:
                self._subscribed.clear()
                log.warning("run completion subscription lost (%s); reconnecting", exc)
                time.sleep(0.5)
            finally:
                try:
                    pubsub.close()
                except (redis.RedisError, OSError):
                    pass

    def _deliver(self, message: dict) -> None:
        name = message["channel"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        data = message["data"]
        status = data.decode() if isinstance(data, bytes) else str(data)
        with self._lock:
            waiters = list(self._waiting.get(name[len(_PREFIX):], ()))
        for waiting in waiters:
            waiting.status = status
            waiting.event.set()


_listeners: dict[tuple[int, int], CompletionListener] = {}
_listeners_lock = threading.Lock()


def listener_for(client: redis.Redis) -> CompletionListener:
    """One listener per Redis client and process (started on first use, after any fork)."""
    key = (os.getpid(), id(client))
    with _listeners_lock:
        listener = _listeners.get(key)
        if listener is None:
            listener = _listeners[key] = CompletionListener(client)
        return listener


class CompletionWaiter:
    """Registered on creation (before the run is enqueued); `wait()` returns the final status,
    or None on timeout."""

    def __init__(self, client: redis.Redis, run_id: str) -> None:
        self._run_id = run_id
        self._listener = listener_for(client)
        self._waiting = self._listener.register(run_id)

    def wait(
        self, timeout: float, should_stop: Callable[[], bool] | None = None
    ) -> str | None:
        """`should_stop` is polled a few times a second; True ends the wait (None)."""
        if should_stop is None:
            if self._waiting.event.wait(max(timeout, 0)):
                return self._waiting.status
            return None
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if should_stop():
                return None
            if self._waiting.event.wait(min(left, 0.25)):
                return self._waiting.status
        return None

    def close(self) -> None:
        self._listener.unregister(self._run_id, self._waiting)

    def __enter__(self) -> CompletionWaiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
