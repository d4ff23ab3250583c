"""Runs in flight in this worker process, so background container work can keep off their
path.

Creating, starting and removing a container costs Docker, containerd and runc ~0.2 CPU-second
(measured by `make bench`); on a small machine that lands on the runs being answered at the
same moment. Refilling the pool and removing used containers therefore wait for a moment
with no run in flight, but never longer than their patience, and not at all when they are
behind (an empty pool, a removal backlog): then they are the priority.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

PATIENCE = 0.3


class RunActivity:
    def __init__(self, patience: float = PATIENCE) -> None:
        self.patience = patience
        self._cond = threading.Condition()
        self._in_flight = 0

    @contextmanager
    def running(self) -> Iterator[None]:
        """Around one run, from its claim to its stored, signalled outcome."""
        with self._cond:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._cond:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._cond.notify_all()

    def wait_quiet(self) -> None:
        """Return when no run is in flight, or after `patience` seconds."""
        with self._cond:
            self._cond.wait_for(lambda: self._in_flight == 0, timeout=self.patience)
