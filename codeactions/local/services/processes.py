"""Start, find and stop the service processes, using only /proc and signals.

Every process we start runs in its own session (so a terminal's Ctrl-C does not reach it)
and carries an environment marker naming the state directory and service, which lets a
later run recognise processes left behind by a crashed supervisor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

logger = logging.getLogger(__name__)

MARKER_VARIABLE = "CODEACTIONS_LOCAL_SERVICE"

_PROC = Path("/proc")
_KILL_WAIT_SECONDS = 5.0


@dataclass
class ManagedProcess:
    """A service process (and its process group) that we started or adopted."""

    name: str
    pid: int
    pgid: int
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def adopt(cls, name: str, pid: int) -> ManagedProcess:
        """Take over a process started by an earlier run: signal its group leader if alive."""
        pgid = _process_group(pid) or pid
        leader = pgid if is_alive(pgid) else pid
        return cls(name=name, pid=leader, pgid=pgid)

    def is_running(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return is_alive(self.pid)

    def stop(self, stop_signal: signal.Signals, grace_seconds: float) -> None:
        """Send `stop_signal`, wait up to `grace_seconds`, then SIGKILL whatever is left."""
        if self.is_running():
            logger.info("stopping %s (pid %d) with %s", self.name, self.pid, stop_signal.name)
            _send(self.pid, stop_signal)
        if not self._wait_group_gone(grace_seconds):
            logger.warning("%s did not stop within %.0fs; killing it", self.name, grace_seconds)
            self._kill_group()
            self._wait_group_gone(_KILL_WAIT_SECONDS)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=_KILL_WAIT_SECONDS)

    def _wait_group_gone(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            if self.popen is not None:
                self.popen.poll()
            if not self.is_running() and not group_members(self.pgid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def _kill_group(self) -> None:
        if self._group_is_killable():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)
        _send(self.pid, signal.SIGKILL)

    def _group_is_killable(self) -> bool:
        return self.pgid > 1 and self.pgid != os.getpgrp()


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    marker: str,
    extra_env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    run_as: pwd.struct_passwd | None = None,
) -> ManagedProcess:
    """Start `argv` in a new session, stdout and stderr appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if run_as is not None:
        env.update(HOME=run_as.pw_dir, USER=run_as.pw_name, LOGNAME=run_as.pw_name)
    env.update(extra_env or {})
    env[MARKER_VARIABLE] = marker
    with log_path.open("ab") as log:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log.write(f"\n===== {stamp} starting: {' '.join(argv)}\n".encode())
        log.flush()
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            user=run_as.pw_uid if run_as else None,
            group=run_as.pw_gid if run_as else None,
            extra_groups=[] if run_as else None,
        )
    logger.info("started %s (pid %d), log: %s", name, popen.pid, log_path)
    return ManagedProcess(name=name, pid=popen.pid, pgid=popen.pid, popen=popen)


def is_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    state = _stat_fields(pid)
    return state is not None and state[0] not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    members = []
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if fields is not None and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(pid)
    return members


def processes_with_marker(marker: str) -> list[int]:
    """Live processes whose environment carries our marker for one service."""
    wanted = f"{MARKER_VARIABLE}={marker}".encode()
    found = []
    for pid in _all_pids():
        try:
            environ = (_PROC / str(pid) / "environ").read_bytes()
        except OSError:
            continue
        if wanted in environ.split(b"\0") and is_alive(pid):
            found.append(pid)
    return found


def listening_pids(port: int) -> set[int]:
    """Processes with a TCP socket listening on `port` (any address), as far as we can see."""
    inodes = _listening_socket_inodes(port)
    if not inodes:
        return set()
    targets = {f"socket:[{inode}]" for inode in inodes}
    holders = set()
    for pid in _all_pids():
        with contextlib.suppress(OSError):
            for fd in (_PROC / str(pid) / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in targets:
                        holders.add(pid)
                        break
    return holders


def pid_from_file(path: Path, command: str) -> int | None:
    """The pid on the first line of `path` if it is a live process named `command`."""
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    if is_alive(pid) and command_name(pid) == command:
        return pid
    return None


def command_name(pid: int) -> str | None:
    """The kernel's short name of `pid` (/proc/<pid>/comm), None if it is gone."""
    try:
        return (_PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return None


def describe(pid: int) -> str:
    """`pid` with its command line, for error messages."""
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return f"pid {pid}"
    command = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return f"pid {pid} ({command[:200]})"


def _listening_socket_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            columns = line.split()
            local_port = int(columns[1].rsplit(":", 1)[1], 16)
            if local_port == port and columns[3] == "0A":  # 0A = LISTEN
                inodes.add(columns[9])
    return inodes


def _all_pids() -> Iterator[int]:
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, ..."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[1].split()


def _process_group(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[2]) if fields is not None else None


def _send(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
