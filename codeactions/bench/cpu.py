"""Where the CPU goes during a load phase: every process on the machine, grouped by what it
is (the API, the worker, PostgreSQL, RabbitMQ, Docker's daemons, the sandboxes, …), read from
/proc before and after. Processes that start and end in between (runc, one-run containers)
are charged to the process that reaped them (cutime/cstime), or stay in "other"."""

from __future__ import annotations

import functools
import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
GROUPS = (
    ("codeactions.cli api", "api (gunicorn)"),
    ("codeactions.cli worker", "worker (celery)"),
    ("bin/postgres", "postgresql"),
    ("redis-server", "redis"),
    ("beam.smp", "rabbitmq"),
    ("moto", "s3 (moto)"),
    ("containerd-shim", "containerd-shim"),
    ("containerd", "containerd"),
    ("dockerd", "dockerd"),
    ("runc", "runc"),
)


SHARED_DAEMONS = ("containerd-shim", "containerd", "dockerd", "runc")


@functools.cache
def _sandbox_uids() -> range:
    """The worker's sandbox uids (worker/sandbox/uids.py) and nobody (Go compiles)."""
    from shared.settings import Settings

    first, _, last = Settings().sandbox_uid_range.partition("-")
    return range(int(first), int(last) + 1)


def _group(pid: str, own_pid: str, root: str) -> str:
    """What the process is; platforms other than the measured one (other checkouts' tests on
    a shared machine) are told apart by their folder."""
    if pid == own_pid:
        return "bench client"
    try:
        uid = os.stat(f"/proc/{pid}").st_uid
        if uid == 65534 or uid in _sandbox_uids():
            return "sandboxes (user code, engines)"
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            "utf-8", "replace")
        # PostgreSQL's backends rename themselves: their program tells what they are.
        cmdline = f"{os.readlink(f'/proc/{pid}/exe')} {cmdline}"
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return "other"
    for needle, name in GROUPS:
        if needle in cmdline:
            if name in SHARED_DAEMONS or root in cmdline or cwd.startswith(root):
                return name
            return "other platforms on this machine"
    return "other processes"


def snapshot(root: str) -> dict[str, tuple[str, int]]:
    """pid -> (group, CPU ticks of the process and of its reaped children)."""
    own = str(os.getpid())
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        ticks = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        out[entry] = (_group(entry, own, root), ticks)
    return out


def machine_ticks() -> int:
    """All CPU time spent (not idle, not iowait), all CPUs."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values) - values[3] - values[4]


class CpuMeter:
    def __init__(self, root: str) -> None:
        self.root = root
        self.before = snapshot(root)
        self.machine_before = machine_ticks()

    def per_run_ms(self, runs: int) -> dict[str, float]:
        """CPU milliseconds per run, by group, plus the machine's total."""
        after = snapshot(self.root)
        spent: dict[str, int] = {}
        for pid, (group, ticks) in after.items():
            delta = ticks - self.before.get(pid, (group, 0))[1]
            spent[group] = spent.get(group, 0) + max(delta, 0)
        total = machine_ticks() - self.machine_before
        accounted = sum(spent.values())
        spent["kernel and short-lived processes"] = max(total - accounted, 0)
        runs = max(runs, 1)
        out = {group: round(ticks * 1000 / TICK / runs, 2)
               for group, ticks in sorted(spent.items(), key=lambda item: -item[1]) if ticks}
        out["total"] = round(total * 1000 / TICK / runs, 2)
        return out
