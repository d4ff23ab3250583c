"""A worker's background upkeep, one thread: it extends the leases of the runs it executes,
sweeps the outbox (shared/after_commit), ends the runs of workers that died (their leases ran
out), removes sandboxes a dead worker or a Docker restart left, notes whether Docker
answers (reported in the worker's heartbeat, read by /health), and asks the watchdog whether
the consumer still consumes.

Every worker does all of it, so a fleet needs no singleton: outbox entries are locked while
handled, and ending a run is a guarded state change (the first writer wins).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.platform import Platform
from shared.runs import store as run_store
from shared.runs import stuck_runs
from worker.leases import RunLeases
from worker.watchdog import CHECK_EVERY, ConsumptionWatchdog

log = logging.getLogger(__name__)

TICK = 2.0
REAP_EVERY = 4.0
LEFTOVERS_EVERY = 30.0
DOCKER_EVERY = 5.0


@dataclass
class _Clock:
    every: float
    last: float = 0.0

    def due(self, now: float) -> bool:
        if now - self.last >= self.every:
            self.last = now
            return True
        return False


class Upkeep:
    def __init__(
        self,
        platform: Platform,
        leases: RunLeases,
        ping_docker: Callable[[], None],
        sweep_leftovers: Callable[[], int],
        watchdog: ConsumptionWatchdog | None = None,
    ) -> None:
        self._platform = platform
        self._leases = leases
        self._ping_docker = ping_docker
        self._sweep_leftovers = sweep_leftovers
        self._watchdog = watchdog
        lease = platform.settings.run_lease_seconds
        self._lease_seconds = lease
        self._clocks = {
            "renew": _Clock(lease / 4), "reap": _Clock(REAP_EVERY),
            "leftovers": _Clock(LEFTOVERS_EVERY), "docker": _Clock(DOCKER_EVERY),
            "watchdog": _Clock(CHECK_EVERY),
        }
        #: Since when PostgreSQL has answered without a break (None: it is failing now).
        self._database_up_since: float | None = time.monotonic()
        self.docker_ok = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="upkeep", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(TICK * random.uniform(0.75, 1.25)):
            self.tick(time.monotonic())

    def tick(self, now: float) -> None:
        clocks = self._clocks
        if clocks["docker"].due(now):
            self._check_docker()
        if clocks["renew"].due(now):
            self._database(self._renew_leases)
        self._database(self._sweep_outbox)
        if clocks["reap"].due(now) and self._may_reap(now):
            self._database(self._reap)
        if self._watchdog is not None and clocks["watchdog"].due(now):
            self._watchdog.check(now)
        if clocks["leftovers"].due(now) and self.docker_ok:
            try:
                self._sweep_leftovers()
            except Exception as exc:
                log.warning("leftover sandboxes not swept: %s", exc)

    def _may_reap(self, now: float) -> bool:
        """Only once PostgreSQL has been answering for a whole lease: after an outage the
        live workers must get the chance to extend leases that ran out meanwhile."""
        up = self._database_up_since
        return up is not None and now - up >= self._lease_seconds

    def _database(self, work: Callable[[], None]) -> None:
        try:
            work()
        except Exception as exc:
            if self._database_up_since is not None:
                log.warning("upkeep paused: %s", exc)
            self._database_up_since = None
            return
        if self._database_up_since is None:
            self._database_up_since = time.monotonic()

    def _renew_leases(self) -> None:
        held = self._leases.held()
        if held:
            with self._platform.db.begin() as connection:
                run_store.renew_leases(connection, held, self._lease_seconds)

    def _sweep_outbox(self) -> None:
        report = self._platform.after_commit.sweep()
        if report.done or report.retried or report.expired:
            log.info("outbox: %d done, %d to retry, %d expired",
                     report.done, report.retried, report.expired)

    def _reap(self) -> None:
        platform = self._platform
        reaped = stuck_runs.reap(platform, platform.settings.stuck_run_margin)
        if reaped:
            log.warning("ended %d runs whose worker was lost", len(reaped))

    def _check_docker(self) -> None:
        try:
            self._ping_docker()
        except Exception as exc:
            if self.docker_ok:
                log.warning("Docker does not answer: %s", exc)
            self.docker_ok = False
        else:
            if not self.docker_ok:
                log.info("Docker answers again")
            self.docker_ok = True
