"""The warm pool: engine containers started ahead of demand, each used for exactly one run.

A pool container is created, hardened and started exactly like a cold one
(worker/sandbox/sandbox.py) and waits on stdin for its job, its attach stream already open.
A run takes one (never blocking), uses it once, and it is destroyed; refill threads start the
next one in the background. An empty pool means the run starts its own container (a cold
start), counted in `codeactions_sandbox_starts_total{kind="cold"}`.

The pool is keyed by image and container limits (which only differ by the network switch),
so a code without network never gets a networked container. A key is kept filled while it is
in demand (the worker's own languages always are); ready containers older than
`…_WARM_POOL_MAX_AGE` are replaced. Every container is labelled with the worker's name and
owner (worker/sandbox/container_owner.py), so a restarted worker removes its predecessor's and no
other platform's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from worker.metrics import fast_path_metrics
from worker.sandbox.container_owner import owner_labels
from worker.sandbox.hardening import remove_quietly
from worker.sandbox.run_activity import RunActivity
from worker.sandbox.sandbox import LaunchedContainer, Sandbox, SandboxLimits

log = logging.getLogger(__name__)

#: A key nobody asked for in this long stops being refilled (unless it is prefilled).
DEMAND_MEMORY = 600.0
REFILL_THREADS = 2
LAUNCH_BACKOFF = 2.0

PoolKey = tuple[Any, ...]


def pool_key(image: str, limits: SandboxLimits) -> PoolKey:
    """What makes two containers interchangeable: the image and the container's limits."""
    return (
        image,
        limits.memory_bytes,
        limits.pids,
        limits.tmpfs_size,
        limits.cpu_quota,
        limits.cpu_shares,
        limits.memory_reservation,
        limits.network,
    )


class ContainerReaper:
    """Removes used containers in the background (a forced remove also kills), in a quiet
    moment between runs unless removals are piling up (worker/sandbox/run_activity.py)."""

    def __init__(self, api: Any, threads: int = 2, activity: RunActivity | None = None) -> None:
        self._api = api
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="container-reaper")
        self._activity = activity
        self._threads = threads
        self._pending = 0
        self._lock = threading.Lock()

    def remove(self, container_id: str) -> None:
        with self._lock:
            self._pending += 1
        try:
            self._executor.submit(self._remove, container_id)
        except RuntimeError:  # shutting down: do it here, now
            self._remove(container_id, patient=False)

    def _remove(self, container_id: str, patient: bool = True) -> None:
        try:
            with self._lock:
                behind = self._pending > self._threads
            if self._activity is not None and patient and not behind:
                self._activity.wait_quiet()
            remove_quietly(self._api, container_id)
        finally:
            with self._lock:
                self._pending -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=True)


class _Entry:
    def __init__(self, image: str, limits: SandboxLimits, permanent: bool) -> None:
        self.image = image
        self.limits = limits
        self.permanent = permanent
        self.ready: deque[LaunchedContainer] = deque()
        self.starting = 0
        self.last_demand = time.monotonic()


class WarmPool:
    def __init__(
        self,
        sandbox: Sandbox,
        worker_name: str,
        size: int,
        max_age: float,
    ) -> None:
        self.sandbox = sandbox
        self.worker_name = worker_name
        self.size = size
        self.max_age = max_age
        self._entries: dict[PoolKey, _Entry] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ public

    def start(self, prefill: list[tuple[str, SandboxLimits]]) -> None:
        """Keep these (image, limits) filled for good; start the refill threads."""
        with self._cond:
            for image, limits in prefill:
                self._entry(image, limits).permanent = True
        for index in range(REFILL_THREADS if self.size > 0 else 0):
            thread = threading.Thread(
                target=self._refill_loop, name=f"warm-pool-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def take(self, image: str, limits: SandboxLimits) -> LaunchedContainer | None:
        """A ready container for one run, or None (the caller starts one: a cold start)."""
        stale: list[tuple[LaunchedContainer, str]] = []
        taken = None
        with self._cond:
            entry = self._entry(image, limits)
            entry.last_demand = time.monotonic()
            while entry.ready:
                candidate = entry.ready.popleft()
                if time.monotonic() - candidate.created > self.max_age:
                    stale.append((candidate, "age"))
                elif not candidate.attached.quiet():
                    stale.append((candidate, "dead"))
                else:
                    taken = candidate
                    break
            self._update_gauge()
            self._cond.notify_all()
        for container, reason in stale:
            self._discard(container, reason)
        fast_path_metrics().sandbox_starts.labels(kind="warm" if taken else "cold").inc()
        return taken

    def ready_count(self, image: str, limits: SandboxLimits) -> int:
        with self._cond:
            entry = self._entries.get(pool_key(image, limits))
            return len(entry.ready) if entry else 0

    def close(self) -> None:
        """Stop refilling and remove every ready container (the worker is stopping)."""
        with self._cond:
            self._closed = True
            leftovers = [c for e in self._entries.values() for c in e.ready]
            for entry in self._entries.values():
                entry.ready.clear()
            self._update_gauge()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)
        for container in leftovers:
            self.sandbox.discard(container, wait=True)

    # ------------------------------------------------------------------ refill

    def _entry(self, image: str, limits: SandboxLimits) -> _Entry:
        key = pool_key(image, limits)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(image, limits, permanent=False)
        return entry

    def _wanted(self, entry: _Entry, now: float) -> bool:
        return entry.permanent or now - entry.last_demand < DEMAND_MEMORY

    def _next_to_fill(self) -> _Entry | None:
        now = time.monotonic()
        for entry in self._entries.values():
            if self._wanted(entry, now) and len(entry.ready) + entry.starting < self.size:
                return entry
        return None

    def _expired(self) -> list[LaunchedContainer]:
        now = time.monotonic()
        expired = []
        for entry in self._entries.values():
            keep: deque[LaunchedContainer] = deque()
            for container in entry.ready:
                too_old = now - container.created > self.max_age
                unwanted = not self._wanted(entry, now)
                (expired if too_old or unwanted else keep).append(container)
            entry.ready = keep
        return expired

    def _refill_loop(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                expired = self._expired()
                entry = self._next_to_fill()
                if entry is not None:
                    entry.starting += 1
                elif not expired:
                    self._cond.wait(timeout=min(5.0, self.max_age / 4))
                self._update_gauge()
            for container in expired:
                self._discard(container, "age")
            if entry is not None and not self._fill(entry):
                with self._cond:  # docker busy or down: runs start their own meanwhile
                    self._cond.wait(timeout=LAUNCH_BACKOFF)

    def _fill(self, entry: _Entry) -> bool:
        labels = {"codeactions.worker": self.worker_name, **owner_labels("pool")}
        if entry.ready:  # one is ready for the next run: start this one between runs
            self.sandbox.activity.wait_quiet()
        try:
            container = self.sandbox.launch(entry.image, entry.limits, labels)
            fast_path_metrics().pool_started.inc()
        except Exception as exc:
            log.warning("warm pool could not start a container: %s", exc)
            with self._cond:
                entry.starting -= 1
            return False
        with self._cond:
            entry.starting -= 1
            kept = not self._closed
            if kept:
                entry.ready.append(container)
            self._update_gauge()
            self._cond.notify_all()
        if not kept:  # the pool closed while it started
            self.sandbox.discard(container, wait=True)
        return True

    def _discard(self, container: LaunchedContainer, reason: str) -> None:
        fast_path_metrics().pool_discarded.labels(reason=reason).inc()
        self.sandbox.discard(container)

    def _update_gauge(self) -> None:
        fast_path_metrics().pool_ready.set(sum(len(e.ready) for e in self._entries.values()))

