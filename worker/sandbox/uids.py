"""A host uid for each sandbox, handed out in turn from `…_SANDBOX_UID_RANGE`.

Docker 20.10 gives a container no user namespace of its own, so a sandbox's uid is a host uid
and every per-user kernel quota (inotify instances, POSIX message queue bytes, pipe buffer
pages, RLIMIT_NPROC, signals, /proc visibility) is shared by every process of that uid on the
host. All sandboxes as `nobody` shared them with each other and with the host's own `nobody`
processes: one project's run could exhaust what another's needed. With a uid per sandbox they
share nothing (THREAT_MODEL.md, "Kernel quotas").

The counter is a locked file shared by every worker of the host (like the network address
counter, worker/network/link.py), so two sandboxes get the same uid only after the whole
range went round (65,536 sandboxes by default): long after a run's container is gone. The
gid is the same number: a group of its own too. Image files are world-readable, so any uid
runs the engines.
"""

from __future__ import annotations

import fcntl
import random
import threading

from shared.settings import Settings
from worker.network.link import lock_directory


class SandboxUids:
    def __init__(self, settings: Settings) -> None:
        first, _, last = settings.sandbox_uid_range.partition("-")
        self.first, self.last = int(first), int(last)
        self._counter = lock_directory() / f"codeactions-sandbox-uid-{self.first}-{self.last}"
        self._lock = threading.Lock()

    def next(self) -> str:
        """`uid:gid` for a new sandbox."""
        uid = self.first + self._next_turn() % (self.last - self.first + 1)
        return f"{uid}:{uid}"

    def __contains__(self, user: str) -> bool:
        uid, _, _gid = user.partition(":")
        return uid.isdigit() and self.first <= int(uid) <= self.last

    def _next_turn(self) -> int:
        with self._lock, open(self._counter, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            text = handle.read().strip()
            turn = int(text) if text.isdigit() else random.randrange(1 << 20)
            handle.seek(0)
            handle.truncate()
            handle.write(str(turn + 1))
            return turn
