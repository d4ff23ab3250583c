"""Code Actions Python engine: the supervisor of a warm environment (engines/PROTOCOL.md,
"Warm environments").

A warm environment is a container bound to one code. This process is its PID 1: it imports
what the code imports (from a fixed list of trusted modules, never the code itself), then
forks one fresh child per run from that pristine state. It never runs user code and never
holds a run's data: the child reads its own job from stdin and writes its own frames to
stdout, exactly as the one-shot harness does. Between runs it kills every other process,
empties every writable place (/tmp, /dev/shm, /dev/mqueue, System V IPC) and only then forks
the next child, so nothing of one run can reach the next.

It is not dumpable (no ptrace, no /proc/1/mem or /proc/1/fd for the code), and as PID 1 of
its PID namespace it receives no signal from the code it did not ask for. Its own messages
on stdout (markers) carry the high bit in their length and a nonce the worker sent after the
run's child had taken its job, so a run can neither forge nor predict them.
"""

import ast
import ctypes
import importlib
import json
import os
import select
import signal
import stat
import time

import harness

MARKER = 0x80000000
CONTROL_MAX = 4 * 1024 * 1024
#: The bind (the code) and a run's job (its body, JSON-escaped): as large as a one-shot
#: container would take; the worker's own caps are far below.
JOB_MAX = 256 * 1024 * 1024
PR_SET_DUMPABLE = 4
IPC_RMID = 0
WRITABLE_DIRS = ("/tmp", "/dev/shm", "/dev/mqueue")
OOM_COUNTERS = ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events")
#: After the worker's own deadline: the supervisor's backstop (seconds).
DEADLINE_GRACE = 5.0
KILL_PATIENCE = 2.0

#: The image's catalog of installed packages (manifest.py): whatever it lists was imported when
#: the image was built, so it may be imported ahead.
LIBRARIES = "/opt/codeactions/libraries.json"

# Imported ahead when the code imports them: the installed packages (LIBRARIES) and standard
# modules whose import has no side effect beyond defining things.
STANDARD_PRELOADABLE = frozenset(
    """abc array asyncio base64 binascii bisect calendar collections contextlib copy csv
    dataclasses datetime decimal difflib email enum fractions functools gzip hashlib heapq
    hmac html http inspect io ipaddress itertools json logging math operator pathlib pprint
    random re secrets shlex socket ssl statistics string struct tempfile textwrap time
    traceback typing unicodedata urllib uuid xml zlib zoneinfo""".split()
)


# ----------------------------------------------------------------------------- wire


def _read_exact(fd, size):
    """Exactly `size` bytes from fd, or None at EOF. Unbuffered on purpose: a buffered read
    would take bytes that belong to the next reader of the same descriptor."""
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(fd, max_size=CONTROL_MAX):
    header = _read_exact(fd, 4)
    if header is None:
        return None
    size = int.from_bytes(header, "big")
    if size > max_size:
        raise ValueError(f"frame of {size} bytes")
    return _read_exact(fd, size)


def _marker(message):
    data = json.dumps(message).encode()
    harness._write_all(1, (MARKER | len(data)).to_bytes(4, "big") + data)


# ----------------------------------------------------------------------------- process


def _undumpable():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE)")


def preloadable(path=LIBRARIES):
    """Top-level names the supervisor may import ahead: the standard modules above and every
    module of the image's installed packages, but those whose import starts a thread (the
    supervisor must stay single-threaded to fork)."""
    names = set(STANDARD_PRELOADABLE)
    try:
        with open(path, encoding="utf-8") as fh:
            manifest = json.load(fh)
        names.update(m.split(".")[0] for p in manifest["packages"] for m in p["modules"])
        names.difference_update(m.split(".")[0] for m in manifest.get("threaded", []))
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        pass  # no catalog: the standard modules only
    return frozenset(names)


def _preload(source, allowed):
    try:
        tree = ast.parse(source)
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    except BaseException:  # the child reports what is wrong with the code
        return
    for name in sorted(names):
        if name.split(".")[0] in allowed:
            try:
                importlib.import_module(name)
            except BaseException:
                pass


def _single_threaded():
    return len(os.listdir("/proc/self/task")) == 1


def _oom_kills():
    for path in OOM_COUNTERS:
        try:
            with open(path) as counters:
                for line in counters:
                    name, _, value = line.partition(" ")
                    if name == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return 0


def _reap(child=None):
    """Collect every ended process; the run's child keeps its exit status."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if child is not None and pid == child.pid:
            child.status = status


def _others():
    me = str(os.getpid())
    return [name for name in os.listdir("/proc") if name.isdigit() and name != me]


def kill_all(child=None):
    """SIGKILL every other process of the container (as PID 1, kill(-1) reaches all of them)
    and reap them (`child`, the run's process, keeps its status); True once none is left."""
    deadline = time.monotonic() + KILL_PATIENCE
    while True:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _reap(child)
        if not _others():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)


def _remove(path):
    info = os.lstat(path)
    if stat.S_ISDIR(info.st_mode):
        os.chmod(path, 0o700)  # a run may have taken its own permissions away
        for name in os.listdir(path):
            _remove(os.path.join(path, name))
        os.rmdir(path)
    else:
        os.unlink(path)


def _remove_ipc():
    libc = ctypes.CDLL(None, use_errno=True)
    removers = {
        "shm": lambda ident: libc.shmctl(ident, IPC_RMID, None),
        "msg": lambda ident: libc.msgctl(ident, IPC_RMID, None),
        "sem": lambda ident: libc.semctl(ident, 0, IPC_RMID),
    }
    for kind, remove in removers.items():
        for ident in _ipc_ids(kind):
            remove(ident)


def _ipc_ids(kind):
    try:
        with open(f"/proc/sysvipc/{kind}") as table:
            return [int(line.split()[1]) for line in table.read().splitlines()[1:] if line]
    except OSError:
        return []


def clean_up():
    """Empty every place a run could leave something; True when all of it is empty."""
    try:
        for directory in WRITABLE_DIRS:
            if os.path.isdir(directory):
                for name in os.listdir(directory):
                    _remove(os.path.join(directory, name))
        _remove_ipc()
        leftovers = [d for d in WRITABLE_DIRS if os.path.isdir(d) and os.listdir(d)]
        return not leftovers and not any(_ipc_ids(kind) for kind in ("shm", "msg", "sem"))
    except (OSError, RecursionError, ValueError):
        return False


# ----------------------------------------------------------------------------- child


class Child:
    """The next run's process: forked while nothing else runs, waiting for its job."""

    def __init__(self, source):
        taken_r, taken_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                _child_main(source, taken_w)
            finally:
                os._exit(70)
        os.close(taken_w)
        self.pid = pid
        self.taken = taken_r
        self.pidfd = os.pidfd_open(pid)
        self.status = None

    def wait_taken(self):
        """Block until the child has read its job (True) or died without one (False)."""
        return os.read(self.taken, 1) == b"T"

    def close(self):
        for fd in (self.taken, self.pidfd):
            try:
                os.close(fd)
            except OSError:
                pass


def _child_main(source, taken_w):
    os.setsid()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    max_fd = os.sysconf("SC_OPEN_MAX")
    os.closerange(3, taken_w)
    os.closerange(taken_w + 1, max_fd)
    try:
        # The kernel's OOM killer takes this run rather than the supervisor.
        with open("/proc/self/oom_score_adj", "w") as adj:
            adj.write("1000")
    except OSError:
        pass
    raw = read_frame(0, JOB_MAX)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the worker's channel is the supervisor's alone from here on
    os.close(devnull)
    if raw is None:
        os._exit(4)  # stdin closed: the worker is gone
    os.write(taken_w, b"T")
    os.close(taken_w)
    os.chdir("/tmp")
    harness.run_job(raw, source=source)


# ----------------------------------------------------------------------------- serve


def _status_fields(status):
    if status is None or status < 0:
        return {"exit_code": None, "signal": None}
    if os.WIFSIGNALED(status):
        return {"exit_code": 128 + os.WTERMSIG(status), "signal": os.WTERMSIG(status)}
    return {"exit_code": os.WEXITSTATUS(status), "signal": None}


def _supervise(child):
    """One run, from the moment its child took the job to the worker's `finish`."""
    seal = json.loads(read_frame(0))
    if seal.get("t") != "seal":
        raise ValueError("expected the run's seal")
    nonce = seal["nonce"]
    deadline = time.monotonic() + seal.get("timeout_ms", 300_000) / 1000 + DEADLINE_GRACE
    oom_before = _oom_kills()
    ended = False
    while True:
        if ended:  # only the worker's finish is left to wait for
            ready, _, _ = select.select([0], [], [])
        else:
            ready, _, _ = select.select([0, child.pidfd], [], [],
                                        max(0.0, deadline - time.monotonic()))
        if 0 in ready:
            message = read_frame(0)
            if message is None:
                return None  # the worker is gone
            if json.loads(message).get("t") == "finish":
                break
        elif not ended:  # the child ended, or the backstop deadline passed
            kill_all(child)  # whatever the run started goes with it; reaps the child too
            _marker({"t": "exited", "nonce": nonce, "oom": _oom_kills() > oom_before,
                     **_status_fields(child.status)})
            ended = True
    killed = kill_all(child)
    child.close()
    return {"nonce": nonce, "oom": _oom_kills() > oom_before, "clean": killed,
            **_status_fields(child.status)}


def serve():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _undumpable()
    bind = json.loads(read_frame(0, JOB_MAX) or b"{}")
    if bind.get("t") != "bind" or not isinstance(bind.get("source"), str):
        os._exit(2)
    source = bind["source"]
    _preload(source, preloadable())
    if not _single_threaded():  # forking a threaded process is not safe
        os._exit(5)
    clean_up()
    child = Child(source)
    _marker({"t": "ready", "nonce": bind.get("nonce")})
    while True:
        if not child.wait_taken():
            kill_all()
            os._exit(0)  # the worker closed stdin, or the child failed before its job
        result = _supervise(child)
        if result is None:
            kill_all()
            os._exit(0)
        result["clean"] = result["clean"] and clean_up()
        if result["clean"]:
            child = Child(source)
        _marker({"t": "done", **result})
        if not result["clean"]:
            os._exit(6)
