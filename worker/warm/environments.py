"""A worker's warm environments: per code, a few containers that each serve one run at a time
as a fresh process (worker/warm/environment.py, engines/PROTOCOL.md "Warm environments").

An environment is bound to one code version (its id, source hash, image and container
limits, so also its network switch): it is never shared between codes, so never between
projects. A run leases an idle one; when none is idle, the run goes the one-container-per-run
way (the warm pool) while a new environment starts in the background, up to
`…_WARM_ENVIRONMENTS_PER_CODE` per code and `…_WARM_ENVIRONMENTS_MAX` in all (the least
recently used idle one of another code makes room). After each run the environment is
reused only once its supervisor reports it clean; it is retired after
`…_WARM_ENVIRONMENT_MAX_RUNS` runs, `…_WARM_ENVIRONMENT_IDLE_SECONDS` without one, when its
code changes, or at the first sign of trouble.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from shared.settings import Settings
from worker.metrics import fast_path_metrics
from worker.sandbox.container_owner import owner_labels
from worker.sandbox.sandbox import Sandbox, SandboxLimits, SandboxOutcome
from worker.warm.environment import WarmEnvironment, WarmEnvironmentError
from worker.warm.pool import pool_key

log = logging.getLogger(__name__)

#: How long a run waits for an environment that is cleaning up after its previous run (once
#: the code has all the environments it may have). A Python or Go one is back in
#: milliseconds; a JavaScript one boots its next Node (~0.2 s, more under load), which is
#: still cheaper than the pool's container churn that would slow every boot further.
DRAIN_WAIT = {"python": 0.5, "go": 0.5, "javascript": 1.0}
#: Languages whose engine has a supervisor (engines/PROTOCOL.md); others use the warm pool.
WARM_LANGUAGES = tuple(DRAIN_WAIT)

IDLE, BUSY, DRAINING, STARTING, RETIRED = "idle", "busy", "draining", "starting", "retired"
#: After an environment of a code version failed to start, its runs use the pool this long.
START_BACKOFF = 60.0


@dataclass(frozen=True)
class WarmSpec:
    """Which code a run belongs to, for a warm environment."""

    language: str
    code_id: str
    project_uuid: str
    #: Mode `resident`: the environment keeps the run's process for the next run of the code.
    resident: bool = False


class _Slot:
    def __init__(self, env: WarmEnvironment) -> None:
        self.env = env
        self.state = STARTING
        self.stale = False


def split_job(language: str, job: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what binds an environment to the code, what one run sends)."""
    bound = ("artifact",) if language == "go" else ("source",)
    bind = {name: job[name] for name in bound if name in job}
    run = {name: value for name, value in job.items() if name not in ("source", "artifact")}
    return bind, run


class WarmEnvironments:
    def __init__(self, sandbox: Sandbox, settings: Settings, worker_name: str) -> None:
        self.sandbox = sandbox
        self.settings = settings
        self.worker_name = worker_name
        self._slots: dict[tuple[Any, ...], list[_Slot]] = {}
        self._failed_starts: dict[tuple[Any, ...], float] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._starter = ThreadPoolExecutor(2, thread_name_prefix="warm-env-start")
        # Drains mostly wait (a JavaScript one for its next Node): more threads than cores.
        self._drainer = ThreadPoolExecutor(8, thread_name_prefix="warm-env-drain")
        self._janitor = threading.Thread(target=self._retire_idle, name="warm-env-janitor",
                                         daemon=True)
        self._janitor.start()

    # ------------------------------------------------------------------ public

    def run(
        self,
        image: str,
        job: dict[str, Any],
        limits: SandboxLimits,
        spec: WarmSpec,
        should_stop: Callable[[], bool] | None = None,
    ) -> SandboxOutcome | None:
        """The run's outcome in an idle environment of its code, or None when there is none
        (the caller runs it the one-container way)."""
        if spec.language not in WARM_LANGUAGES:
            return None
        bind, run_job = split_job(spec.language, job)
        if spec.resident:
            share = self.settings.resident_recycle_memory_percent / 100
            bind.update(resident=True, rss_max=int(limits.memory_bytes * share))
        # The code version: its source, its compat (a legacy Go program binds another
        # artifact than the same source would in strict mode) and its mode.
        mode = "resident" if spec.resident else "warm"
        version = hashlib.sha256(
            f"{job.get('compat', 'strict')}\0{mode}\0{job.get('source', '')}".encode()
        ).hexdigest()[:16]
        key = (spec.code_id, version, *pool_key(image, limits))
        slot = self._lease(key, spec, image, limits, bind)
        if slot is None:
            fast_path_metrics().warm_misses.labels(language=spec.language).inc()
            return None
        try:
            outcome = slot.env.run(run_job, limits, should_stop)
        except Exception:
            self._retire(slot, "broken")
            raise
        fast_path_metrics().warm_runs.labels(language=spec.language).inc()
        with self._cond:
            slot.state = DRAINING
        self._submit(self._drainer, self._drain, slot)
        return outcome

    def count(self, code_id: str | None = None) -> int:
        with self._cond:
            return sum(
                1 for key, slots in self._slots.items() for slot in slots
                if code_id is None or key[0] == code_id
            )

    def wait_idle(self, code_id: str, timeout: float) -> bool:
        """Wait until the code has an environment ready (tests and the bench use it)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if any(s.state == IDLE for k, slots in self._slots.items() if k[0] == code_id
                       for s in slots):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._starter.shutdown(wait=True)
        self._drainer.shutdown(wait=True)
        with self._cond:
            slots = [slot for slots in self._slots.values() for slot in slots]
            self._slots.clear()
        for slot in slots:
            fast_path_metrics().warm_retired.labels(reason="stopped").inc()
            slot.env.destroy()
        self._update_gauge()

    # ------------------------------------------------------------------ leasing

    def _lease(
        self,
        key: tuple[Any, ...],
        spec: WarmSpec,
        image: str,
        limits: SandboxLimits,
        bind: dict[str, Any],
    ) -> _Slot | None:
        """An idle environment of the key, now BUSY. The code's first one is started and
        waited for (its cold start, as in Lambda); when all are busy, another starts in the
        background and this run goes without (None)."""
        deadline = time.monotonic() + DRAIN_WAIT[spec.language]
        first: _Slot | None = None
        slot: _Slot | None = None
        dead: list[_Slot] = []
        with self._cond:
            if self._closed:
                return None
            to_retire = self._replace_other_versions(spec.code_id, key)
            while True:
                slots = [s for s in self._slots.get(key, []) if s not in dead]
                idle = [s for s in slots if s.state == IDLE]
                if idle:
                    slot = max(idle, key=lambda s: s.env.last_used)
                    slot.state = BUSY
                    if slot.env.usable():
                        break
                    dead.append(slot)  # it died while idle: retired below, try the next
                    slot = None
                    continue
                failed_at = self._failed_starts.get(key)
                if failed_at is not None and time.monotonic() - failed_at < START_BACKOFF:
                    break
                if len(slots) < self.settings.warm_environments_per_code:
                    is_first = not slots
                    started, evicted = self._start(key, spec, image, limits, bind)
                    to_retire += evicted
                    first = started if is_first else None
                    break
                left = deadline - time.monotonic()
                if left <= 0 or not any(s.state == DRAINING for s in slots):
                    break
                self._cond.wait(left)
        for old in to_retire:
            self._retire(old, "replaced" if old.env.key[0] == spec.code_id else "evicted")
        for broken in dead:
            self._retire(broken, "broken")
        if first is not None:
            slot = self._await_boot(first)
        return slot

    def _await_boot(self, slot: _Slot) -> _Slot | None:
        with self._cond:
            while slot.state == STARTING and not self._closed:
                self._cond.wait()
            if slot.state != IDLE:
                return None  # it did not start: this run goes the one-container way
            slot.state = BUSY
            return slot

    def _replace_other_versions(self, code_id: str, key: tuple[Any, ...]) -> list[_Slot]:
        """Environments of an older version of the code: idle ones go now, the others once
        their run is over."""
        gone = []
        for other_key, slots in self._slots.items():
            if other_key[0] != code_id or other_key == key:
                continue
            for slot in slots:
                slot.stale = True
                if slot.state == IDLE:
                    slot.state = BUSY  # nobody leases it while it goes
                    gone.append(slot)
        return gone

    def _start(
        self,
        key: tuple[Any, ...],
        spec: WarmSpec,
        image: str,
        limits: SandboxLimits,
        bind: dict[str, Any],
    ) -> tuple[_Slot | None, list[_Slot]]:
        """Start an environment in the background (called with the lock held): the new slot
        (None when there is no room) and the idle one evicted to make room, if any."""
        evicted = []
        if self._total() >= self.settings.warm_environments_max:
            victim = self._least_recently_used_idle()
            if victim is None:
                return None, []
            evicted.append(victim)
        labels = {
            "codeactions.worker": self.worker_name,
            "codeactions.code_id": spec.code_id,
            "codeactions.project": spec.project_uuid,
            **owner_labels("warm"),
        }
        slot = _Slot(WarmEnvironment(self.sandbox, key, image, limits, labels, bind))
        self._slots.setdefault(key, []).append(slot)
        self._submit(self._starter, self._boot, slot)
        self._update_gauge()
        return slot, evicted

    def _boot(self, slot: _Slot) -> None:
        try:
            slot.env.start()
        except Exception as exc:  # the code keeps running in the pool meanwhile
            log.warning("warm environment for code %s did not start: %s", slot.env.key[0], exc)
            with self._cond:
                self._failed_starts[slot.env.key] = time.monotonic()
            self._retire(slot, "failed_start")
            return
        with self._cond:
            slot.state = IDLE
            self._cond.notify_all()

    def _drain(self, slot: _Slot) -> None:
        clean = slot.env.drain()
        reason = None
        if not clean:
            reason = "unclean"
        elif slot.env.runs >= self.settings.warm_environment_max_runs:
            reason = "max_runs"
        elif slot.stale:
            reason = "replaced"
        if reason is not None:
            self._retire(slot, reason)
            return
        with self._cond:
            slot.state = IDLE
            self._cond.notify_all()

    # ------------------------------------------------------------------ retiring

    def _retire(self, slot: _Slot, reason: str) -> None:
        with self._cond:
            slot.state = RETIRED
            slots = self._slots.get(slot.env.key)
            if slots is not None and slot in slots:
                slots.remove(slot)
                if not slots:
                    del self._slots[slot.env.key]
            self._cond.notify_all()
        fast_path_metrics().warm_retired.labels(reason=reason).inc()
        slot.env.destroy()
        self._update_gauge()

    def _retire_idle(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                self._cond.wait(timeout=min(5.0, self.settings.warm_environment_idle_seconds))
                now = time.monotonic()
                idle_for = self.settings.warm_environment_idle_seconds
                expired = [
                    slot for slots in self._slots.values() for slot in slots
                    if slot.state == IDLE and now - slot.env.last_used > idle_for
                ]
                for slot in expired:
                    slot.state = BUSY  # nobody leases it while it goes
                for key, failed_at in list(self._failed_starts.items()):
                    if now - failed_at > START_BACKOFF:
                        del self._failed_starts[key]
            for slot in expired:
                self._retire(slot, "idle")

    def _least_recently_used_idle(self) -> _Slot | None:
        idle = [s for slots in self._slots.values() for s in slots if s.state == IDLE]
        if not idle:
            return None
        victim = min(idle, key=lambda s: s.env.last_used)
        victim.state = BUSY  # nobody leases it while it goes
        return victim

    def _total(self) -> int:
        return sum(len(slots) for slots in self._slots.values())

    def _submit(self, executor: ThreadPoolExecutor, fn: Callable[[_Slot], None],
                slot: _Slot) -> None:
        try:
            executor.submit(fn, slot)
        except RuntimeError:  # closing: nothing more starts or is reused
            self._retire(slot, "stopped")

    def _update_gauge(self) -> None:
        fast_path_metrics().warm_live.set(self.count())


__all__ = ["WarmEnvironmentError", "WarmEnvironments", "WarmSpec"]
