"""The runs this worker is executing, whose leases it keeps extending (shared/runs/store.py,
`renew_leases`); a run leaves the set once its outcome is stored (or given up)."""

from __future__ import annotations

import threading
import uuid


class RunLeases:
    def __init__(self) -> None:
        self._held: set[uuid.UUID] = set()
        self._lock = threading.Lock()

    def hold(self, run_id: uuid.UUID) -> None:
        with self._lock:
            self._held.add(run_id)

    def release(self, run_id: uuid.UUID) -> None:
        with self._lock:
            self._held.discard(run_id)

    def held(self) -> list[uuid.UUID]:
        with self._lock:
            return list(self._held)
