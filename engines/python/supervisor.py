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

Resident mode (a bind with `"resident": true`, engines/PROTOCOL.md): the child stays. It serves
one run after another of the same code, keeping the module the first one loaded. We relay its
jobs through a pipe, so the worker's channel (the seal's nonce, `finish`) stays ours alone;
just before its `end` frame it says on another pipe that its run ended. At `finish` we keep
it when its run ended, it is alive and holds at most `rss_max` bytes: only the other
processes are killed. Anything else ends it and the next child starts cold, as in a warm
environment. (Relaying means our memory held a job, which a later child inherits: it is the
same code, which sees its callers' data anyway in this mode.)
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
    """The next run's process: forked while nothing else runs, waiting for its job. A
    resident one reads its jobs from our pipe (`jobs`) and tells its runs' ends (`ended`)."""

    def __init__(self, source, resident=False):
        taken_r, taken_w = os.pipe() if not resident else (None, None)
        ended_r, ended_w = os.pipe() if resident else (None, None)
        jobs_r, jobs_w = os.pipe() if resident else (None, None)
        pid = os.fork()
        if pid == 0:
            try:
                if resident:
                    _resident_main(source, jobs_r, ended_w)
                else:
                    _child_main(source, taken_w)
            finally:
                os._exit(70)
        for fd in (taken_w, ended_w, jobs_r):
            if fd is not None:
                os.close(fd)
        self.pid = pid
        self.taken = taken_r
        self.ended = ended_r
        self.jobs = jobs_w
        self.resident = resident
        self.pidfd = os.pidfd_open(pid)
        self.status = None

    def wait_taken(self):
        """Block until the child has read its job (True) or died without one (False)."""
        return os.read(self.taken, 1) == b"T"

    def alive(self):
        return not select.select([self.pidfd], [], [], 0)[0]

    def relay(self, raw):
        """Resident: the worker's next job, passed to the child."""
        try:
            harness._write_all(self.jobs, len(raw).to_bytes(4, "big") + raw)
        except OSError:
            pass  # it died this very moment: its pidfd says so in _supervise

    def rss(self):
        """Bytes of memory the child holds (resident set); None when it is gone."""
        try:
            with open(f"/proc/{self.pid}/statm") as statm:
                return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def close(self):
        for fd in (self.taken, self.pidfd, self.ended, self.jobs):
            try:
                if fd is not None:
                    os.close(fd)
            except OSError:
                pass


def _child_setup(keep):
    os.setsid()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    fd = 3
    for kept in sorted(keep):
        os.closerange(fd, kept)
        fd = kept + 1
    os.closerange(fd, os.sysconf("SC_OPEN_MAX"))
    try:
        # The kernel's OOM killer takes this run rather than the supervisor.
        with open("/proc/self/oom_score_adj", "w") as adj:
            adj.write("1000")
    except OSError:
        pass


def _resident_main(source, jobs, ended_w):
    _child_setup({jobs, ended_w})
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the worker's channel is the supervisor's alone
    os.close(devnull)
    os.chdir("/tmp")
    resident = harness.Resident(source)
    while True:
        raw = read_frame(jobs, JOB_MAX)
        if raw is None:
            os._exit(4)  # the supervisor is gone
        resident.serve(raw, lambda: os.write(ended_w, b"E"))


def _child_main(source, taken_w):
    _child_setup({taken_w})
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


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            return stat_file.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return True  # gone


def kill_others(child):
    """Resident: SIGKILL every process but the child (what its runs started; its zombies are
    its own) and reap; True once none is left and the child still lives."""
    deadline = time.monotonic() + KILL_PATIENCE
    while True:
        others = [int(pid) for pid in _others() if int(pid) != child.pid and not _zombie(pid)]
        for pid in others:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap(child)
        if child.status is not None:
            return False
        if not others:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)


def _supervise(child, rss_max=None):
    """One run, from the moment its child took the job to the worker's `finish`."""
    seal = json.loads(read_frame(0))
    if seal.get("t") != "seal":
        raise ValueError("expected the run's seal")
    nonce = seal["nonce"]
    deadline = time.monotonic() + seal.get("timeout_ms", 300_000) / 1000 + DEADLINE_GRACE
    oom_before = _oom_kills()
    ended = False
    run_ended = False  # resident: the child wrote its end frame and waits for the next job
    watch_ended = child.resident
    while True:
        if ended:  # only the worker's finish is left to wait for
            ready, _, _ = select.select([0], [], [])
        elif run_ended:  # the child may still die before the finish
            ready, _, _ = select.select([0, child.pidfd], [], [])
        else:
            watched = [0, child.pidfd] + ([child.ended] if watch_ended else [])
            ready, _, _ = select.select(watched, [], [], max(0.0, deadline - time.monotonic()))
        if 0 in ready:
            message = read_frame(0)
            if message is None:
                return None  # the worker is gone
            finish = json.loads(message)
            if finish.get("t") == "finish":
                if watch_ended and child.ended in select.select([child.ended], [], [], 0)[0]:
                    # Written before its end frame: there by the time the worker has it.
                    run_ended = os.read(child.ended, 1) == b"E"
                # …and the worker must have taken that end too: a run that wrote the byte
                # itself and went on past its timeout is not kept.
                run_ended = run_ended and finish.get("ended") is True
                break
        elif watch_ended and child.ended in ready and child.pidfd not in ready:
            # One byte: its run ended. End of file: it is going, and its pidfd will say so.
            run_ended = os.read(child.ended, 1) == b"E"
            watch_ended = False
        elif not ended:  # the child ended, or the backstop deadline passed
            kill_all(child)  # whatever the run started goes with it; reaps the child too
            _marker({"t": "exited", "nonce": nonce, "oom": _oom_kills() > oom_before,
                     **_status_fields(child.status)})
            ended = True
    if run_ended and not ended:
        rss = child.rss()
        if rss is not None and (rss_max is None or rss <= rss_max) and kill_others(child):
            return {"nonce": nonce, "oom": _oom_kills() > oom_before, "clean": True,
                    "kept": True, **_status_fields(None)}
    killed = kill_all(child)
    child.close()
    result = {"nonce": nonce, "oom": _oom_kills() > oom_before, "clean": killed,
              **_status_fields(child.status)}
    if child.resident:
        result["kept"] = False
    return result


def serve():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _undumpable()
    bind = json.loads(read_frame(0, JOB_MAX) or b"{}")
    if bind.get("t") != "bind" or not isinstance(bind.get("source"), str):
        os._exit(2)
    source = bind["source"]
    resident = bind.get("resident") is True
    rss_max = bind.get("rss_max")
    if not isinstance(rss_max, int) or isinstance(rss_max, bool) or rss_max <= 0:
        rss_max = None
    _preload(source, preloadable())
    if not _single_threaded():  # forking a threaded process is not safe
        os._exit(5)
    clean_up()
    child = Child(source, resident)
    _marker({"t": "ready", "nonce": bind.get("nonce")})
    while True:
        if child.resident:
            raw = read_frame(0, JOB_MAX)
            if raw is None:
                kill_all()
                os._exit(0)  # the worker closed stdin
            if not child.alive():
                # It died between runs (killed from outside, or by a thread a run left): the
                # job goes to a fresh process rather than failing a caller who did nothing.
                kill_all(child)
                child.close()
                if not clean_up():
                    os._exit(6)
                child = Child(source, resident)
            child.relay(raw)
            del raw
        elif not child.wait_taken():
            kill_all()
            os._exit(0)  # the worker closed stdin, or the child failed before its job
        result = _supervise(child, rss_max)
        if result is None:
            kill_all()
            os._exit(0)
        if result.get("kept"):
            _marker({"t": "done", **result})
            continue
        result["clean"] = result["clean"] and clean_up()
        if result["clean"]:
            child = Child(source, resident)
        _marker({"t": "done", **result})
        if not result["clean"]:
            os._exit(6)
