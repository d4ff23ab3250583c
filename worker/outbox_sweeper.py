"""Every worker sweeps the outbox (shared/after_commit): steps whose first attempt failed or
whose process died before finishing them are retried or expired here. Several workers share
the work (entries are locked while handled), so a fleet needs no singleton for it."""

from __future__ import annotations

import logging
import random
import threading

from shared.after_commit.runner import AfterCommitRunner

log = logging.getLogger(__name__)

#: Seconds between sweeps (jittered, so a fleet's sweepers spread out).
INTERVAL = 2.0


class OutboxSweeper:
    def __init__(self, runner: AfterCommitRunner, interval: float = INTERVAL) -> None:
        self._runner = runner
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="outbox-sweeper",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval * random.uniform(0.75, 1.25)):
            try:
                report = self._runner.sweep()
            except Exception as exc:  # PostgreSQL away: the next sweep tries again
                log.warning("outbox sweep failed: %s", exc)
                continue
            if report.done or report.retried or report.expired:
                log.info("outbox sweep: %d done, %d to retry, %d expired",
                         report.done, report.retried, report.expired)
