"""Which worker process owns a long-lived sandbox container (a warm-pool container or a warm
environment), so leftovers can be told from containers another platform still uses.

Several platforms may share one Docker engine (`make run` and `make test`, several
checkouts). One-shot run containers are leftovers once older than the longest run; long-lived
ones are not, so they carry `codeactions.owner=<host>:<pid>:<process start time>`: they are
leftovers only when that process is gone from this host (the start time guards against a
reused pid). A container owned on another host is never judged from here.
"""

from __future__ import annotations

import functools
import os
import socket

KIND_LABEL = "codeactions.kind"
OWNER_LABEL = "codeactions.owner"
LONG_LIVED_KINDS = ("pool", "warm")


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The command name is in parentheses and may hold spaces: count after it.
            fields = stat.read().rsplit(")", 1)[1].split()
        return fields[19]  # field 22 of the whole line: start time in clock ticks
    except (OSError, IndexError):
        return None


def process_owner() -> str:
    return _owner(os.getpid())  # per pid: a forked child is another owner


@functools.cache
def _owner(pid: int) -> str:
    """Read once per process: labels are taken at every pool refill and environment start."""
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or 0}"


def owner_labels(kind: str) -> dict[str, str]:
    return {KIND_LABEL: kind, OWNER_LABEL: process_owner()}


def owner_gone(owner: str) -> bool:
    """True only when the owner was a process on this host that no longer runs."""
    host, _, rest = owner.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    return _start_time(int(pid_text)) != started
