"""Completion signal: the worker publishes when a run ends; whoever waits is woken at once.

Redis pub/sub, so the API does not poll the database (it does, twice a second per waiter,
only while Redis is unreachable). Each process keeps one subscription (to
every run's channel, by pattern) on one connection, read by one thread that wakes the
waiting requests: a sync call costs no Redis connection and no subscribe round trip of its
own. A waiter registers before the run exists, so the signal cannot fire before anyone
listens. The worker's message carries the ended row (`shared.runs.signal_record`), which the
waiter answers from; without it (a lost message, a plain status) the row is read, so a lost
message costs latency, never a wrong answer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from shared.runs import signal_record

log = logging.getLogger(__name__)

CHANNEL = "codeactions:run-done:{run_id}"
_PREFIX = CHANNEL.format(run_id="")
_PATTERN = _PREFIX + "*"
#: How long the process's first waiter waits for the subscription to come up.
FIRST_SUBSCRIBE_WAIT = 5.0
#: How often a waiter looks at its stop condition and the subscription's state.
TICK = 0.25
#: How often a waiter reads the run's state while the subscription is down.
POLL_EVERY = 0.5


def channel(run_id: str) -> str:
    return CHANNEL.format(run_id=run_id)


def publish_done(client: redis.Redis, run_id: str, message: str) -> None:
    """`message`: the status, or `signal_record.encode`'s status with the ended row."""
    client.publish(channel(run_id), message)


def publish_many(client: redis.Redis, done: list[tuple[str, str]]) -> None:
    """(run id, message) pairs in one round trip."""
    if len(done) == 1:
        publish_done(client, *done[0])
        return
    pipeline = client.pipeline(transaction=False)
    for run_id, message in done:
        pipeline.publish(channel(run_id), message)
    pipeline.execute()


class _Waiting:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.status: str | None = None
        self.record: dict[str, Any] | None = None


class CompletionListener:
    """This process's one subscription to every run's completion channel."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._waiting: dict[str, list[_Waiting]] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._started = threading.Event()  # the first subscription attempt has ended
        #: Bumped at every (re)subscription: a waiter that saw another generation may have
        #: missed its signal while the subscription was down.
        self.generation = 0
        self._thread = threading.Thread(target=self._listen, name="run-completions", daemon=True)
        self._thread.start()

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    def register(self, run_id: str) -> _Waiting:
        """Listen for `run_id`. Never raises: while Redis is away waiters poll instead."""
        self._started.wait(FIRST_SUBSCRIBE_WAIT)  # only the process's first call waits
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
        delay = 0.5
        while True:
            pubsub = self._client.pubsub()
            try:
                pubsub.psubscribe(_PATTERN)
                # Subscribed once Redis confirms: a run enqueued after that cannot be missed.
                confirmed = pubsub.get_message(timeout=FIRST_SUBSCRIBE_WAIT)
                if not confirmed or confirmed.get("type") != "psubscribe":
                    raise redis.ConnectionError("no subscription confirmation")
                self.generation += 1
                self._subscribed.set()
                self._started.set()
                if delay > 0.5:
                    log.info("run completion subscription is back")
                delay = 0.5
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "pmessage":
                        self._deliver(message)
            except (redis.RedisError, OSError) as exc:
                self._subscribed.clear()
                self._started.set()
                if delay == 0.5:  # once per outage, not at every retry
                    log.warning("run completion subscription lost (%s); waiters poll the "
                                "database until it is back", exc)
                time.sleep(delay)
                delay = min(5.0, delay * 2)
            finally:
                try:
                    pubsub.close()
                except (redis.RedisError, OSError):
                    pass

    def _deliver(self, message: dict) -> None:
        name = message["channel"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        with self._lock:
            waiters = list(self._waiting.get(name[len(_PREFIX):], ()))
        if not waiters:  # every process hears every run's end: decode only our own
            return
        data = message["data"]
        status, record = signal_record.decode(
            data.decode() if isinstance(data, bytes) else str(data))
        for waiting in waiters:
            waiting.status, waiting.record = status, record
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
    """Registered on creation (before the run is enqueued); `wait()` returns when the run
    ended (its status, or "ended" when learnt by polling), or None on timeout.

    `ended` reads the run's state from the database: it is asked (at most every
    `POLL_EVERY` seconds) while the subscription is down, and once after it came back, since
    a signal published meanwhile was lost."""

    def __init__(
        self, client: redis.Redis, run_id: str, ended: Callable[[], bool] | None = None
    ) -> None:
        self._run_id = run_id
        self._ended = ended
        self._listener = listener_for(client)
        self._waiting = self._listener.register(run_id)
        self._generation = self._listener.generation if self._listener.subscribed else -1

    def wait(
        self, timeout: float, should_stop: Callable[[], bool] | None = None
    ) -> str | None:
        """`should_stop` is asked a few times a second; True ends the wait (None)."""
        deadline = time.monotonic() + timeout
        polled = 0.0
        while (left := deadline - time.monotonic()) > 0:
            if should_stop is not None and should_stop():
                return None
            if self._waiting.event.wait(min(left, TICK)):
                return self._waiting.status
            if self._ended is not None and self._may_have_missed_it():
                if time.monotonic() - polled >= POLL_EVERY:
                    polled = time.monotonic()
                    if self._listener.subscribed:  # back: one read covers the gap
                        self._generation = self._listener.generation
                    if self._ended():
                        return "ended"
        return None

    @property
    def record(self) -> dict[str, Any] | None:
        """The ended row the signal carried (None: not signalled, or signalled without)."""
        return self._waiting.record

    def _may_have_missed_it(self) -> bool:
        listener = self._listener
        return not listener.subscribed or listener.generation != self._generation

    def close(self) -> None:
        self._listener.unregister(self._run_id, self._waiting)

    def __enter__(self) -> CompletionWaiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
