"""Hostile code, one attack at a time: each ends `failed` (or contained) with a specific
reason, leaves nothing running, and the worker serves the next run as if nothing happened.

Sources live in `attacks/<language>/<attack>.<ext>`; a language joins a case by adding a
file there.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import docker
import docker.errors
import pytest
import requests

from tests.integration.helpers import call, create_code, no_run_leftovers
from worker.warm.environments import WARM_LANGUAGES

ATTACKS_DIR = Path(__file__).parent / "attacks"
EXTENSIONS = {"python": "py", "javascript": "js", "go": "go"}

# attack -> (timeout, (final status, reason substring or alternatives))
ATTACKS: dict[str, tuple[int, tuple]] = {
    'busy_loop': (5, ('failed', 'timed out after 5 s')),
    'sleep_past_timeout': (5, ('failed', 'timed out after 5 s')),
    'fork_bomb': (10, ('failed', None)),
    'memory_hog': (30, ('failed', 'memory limit exceeded (256 MiB)')),
    # The 16 MiB file-size limit or the 16 MiB tmpfs, whichever bites first; per language.
    'disk_fill_tmp': (30, ('failed', ('No space left on device', 'File too large',
                                      'no space left', 'file too large', 'ENOSPC', 'EFBIG',
                                      'file size limit'))),
    'write_outside_tmp': (10, ('failed', ('Read-only file system', 'read-only file system',
                                          'EROFS'))),
    'stdout_flood': (30, ('failed', 'output limit exceeded')),
    # fd 2 written past the language's own streams, by the run and by a child: output too.
    'stderr_flood': (30, ('failed', 'output limit exceeded')),
    'child_stderr_flood': (30, ('failed', 'output limit exceeded')),
    # Half a frame, then gone: failed at once (not at the 30 s timeout), saying so (the
    # JavaScript and Go engines relay frames and report the death themselves).
    'die_mid_frame': (30, ('failed', ('died in the middle of a frame', 'killed by signal',
                                      'was killed'))),
    # Statuses outside 200–599 are refused in strict mode; throwing nothing still fails.
    'informational_status': (10, ('failed', 'must be an HTTP status (200-599)')),
    'throw_null': (10, ('failed', 'null was thrown')),
    # PID 1 (our init one-shot, the supervisor warm) is undumpable: nothing of it readable.
    'reach_pid1': (10, ('completed', 'pid 1 out of reach')),
    # Every call our seccomp profile refuses answers EPERM or ENOSYS.
    'seccomp_denied': (10, ('completed', 'all denied')),
    'huge_result': (30, ('failed', 'output limit exceeded (2 MiB)')),
    'log_flood': (30, ('failed', 'log limit exceeded (1000 logs per run)')),
    'close_std_streams': (10, ('completed', 'still here')),
    'binary_output': (10, ('completed', 'bin')),
    'orphan_child': (10, ('completed', 'parent done')),
    # Completes; what it returns is checked for platform secrets like every result.
    'read_environment': (10, ('completed', None)),
}


def source(language: str, name: str) -> str:
    return (ATTACKS_DIR / language / f"{name}.{EXTENSIONS[language]}").read_text()


LANGUAGES = ("python", "javascript", "go")
# In a language with warm environments (WARM_LANGUAGES) each attack also runs in one (mode
# `warm`: a fresh process per run) and in a kept process (mode `resident`), where
# "contained" also means the environment holds nothing of it afterwards: a resident process
# that a run broke is replaced, one that survived is left alone, waiting for the next run.
CASES = [
    pytest.param(name, language, mode,
                 id=f"{language}-{name}" + ("" if mode == "pool" else f"-{mode}"))
    for name in ATTACKS
    for language in LANGUAGES
    for mode in (("pool", "warm", "resident") if language in WARM_LANGUAGES else ("pool",))
    if (ATTACKS_DIR / language / f"{name}.{EXTENSIONS[language]}").exists()
]


def _labels(container_id: str) -> dict | None:
    try:
        return docker.from_env().containers.get(container_id).labels
    except docker.errors.NotFound:
        return None


def _wait_finished(platform, run_id: str, seconds: float = 30) -> dict:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while True:
        run = requests.get(platform.url(f"/coderun/{run_id}")).json()
        if run["status"] in ("completed", "failed") or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def _called(platform, code_id: str) -> dict:  # noqa: ANN001
    """Call the code; its run once finished."""
    response = call(platform, code_id)
    run_id = response.headers.get("X-Run-Id") or (
        response.json().get("run_id") if response.status_code >= 400 else None
    )
    if run_id is None:
        runs = requests.get(platform.url("/coderun"), params={"code_id": code_id}).json()
        run_id = runs[0]["id"]
    return _wait_finished(platform, run_id)


@pytest.mark.parametrize(("attack", "language", "mode"), CASES)
def test_attack_is_contained(platform, attack: str, language: str, mode: str):
    timeout, (status, reason) = ATTACKS[attack]
    code = create_code(platform, source(language, attack), language=language, timeout=timeout,
                       mode=mode)
    run = _called(platform, code["id"])
    assert run["status"] == status, run
    if reason:
        reasons = reason if isinstance(reason, tuple) else (reason,)
        assert any(r in run["result"] for r in reasons), run["result"]
    # Whatever the code saw or said, no platform setting or secret is in it.
    for secret in ("FLOWS_CODE_ACTIONS", "postgresql", "amqp://", "redis://",
                   platform.urls["s3"]):
        assert secret not in run["result"], secret
    # It ran in the code's own warm environment (still there unless the attack broke it).
    labels = _labels(run["container_id"])
    if mode != "pool" and labels is not None:
        assert labels["codeactions.kind"] == "warm", labels
        assert labels["codeactions.code_id"] == code["id"], labels
    # Nothing of the run is left on the Docker engine (nor in its warm environment).
    assert run["container_id"], run
    assert no_run_leftovers(run["container_id"], resident=mode == "resident")
    # The worker serves the next run normally.
    hello = create_code(platform, source(language, "hello"), language=language, mode=mode)
    after = call(platform, hello["id"])
    assert after.status_code == 200 and after.text == "ok"




def test_no_docker_socket_or_secret_mounts(platform):
    code = create_code(platform, '''
import os
def Run(engine):
    found = [p for p in ("/var/run/docker.sock", "/run/docker.sock", "/run/secrets",
                         "/var/run/secrets", "/root/.aws", "/.dockerenv")
             if os.path.exists(p) and p != "/.dockerenv"]
    mounts = open("/proc/self/mounts").read()
    engine.result.set({"found": found, "bind_mounts": [l for l in mounts.splitlines()
                       if " /etc/" not in l and "bind" in l]}, content_type="json")
''')
    got = call(platform, code["id"]).json()
    assert got == {"found": [], "bind_mounts": []}


@pytest.mark.parametrize("mode", ["warm", "resident"])
@pytest.mark.parametrize("language", WARM_LANGUAGES)
def test_a_warm_supervisor_survives_every_signal_its_run_sends(
    platform, language: str, mode: str
):
    """PID 1 of a warm environment takes no signal from its run (engines/PROTOCOL.md): after
    a run sent every signal number to it, the environment is still up and serves again (in
    mode resident, from the process that sent them or its replacement)."""
    code = create_code(platform, source(language, "signal_pid1"), language=language, mode=mode)
    served: dict[str, int] = {}  # warm container → runs it served
    deadline = time.monotonic() + 90
    while max(served.values(), default=0) < 2 and time.monotonic() < deadline:
        # A call may go to a pool container (its init passes the signals on to the
        # run, which then dies), or to another environment of the code (one that missed a
        # deadline on a busy machine is replaced): a warm container serving twice counts.
        run = _called(platform, code["id"])
        labels = _labels(run["container_id"])
        if labels and labels["codeactions.kind"] == "warm":
            assert run["status"] == "completed" and run["result"] == "sent", run
            served[run["container_id"]] = served.get(run["container_id"], 0) + 1
        else:
            time.sleep(0.3)
    # An environment took every signal, then served the next run.
    twice = [container for container, runs in served.items() if runs >= 2]
    assert twice, f"no warm environment served two runs: {served}"
    state = docker.from_env().api.inspect_container(twice[0])["State"]
    assert state["Running"] is True, state


QUOTA_HOG = '''
import ctypes, fcntl, json, os, time

def Run(engine):
    libc = ctypes.CDLL(None, use_errno=True)
    inotify = 0
    while libc.inotify_init1(0) != -1:  # fs.inotify.max_user_instances, per uid
        inotify += 1
    queues = 0
    while libc.mq_open(f"/hog{queues}".encode(), os.O_CREAT | os.O_RDWR, 0o600, None) != -1:
        queues += 1  # RLIMIT_MSGQUEUE bytes, counted per uid
    pipe_error = ""
    for _ in range(80):  # fs.pipe-user-pages-soft (64 MiB), counted per uid
        read_end, write_end = os.pipe()
        os.close(write_end)
        try:
            fcntl.fcntl(read_end, 1031, 1 << 20)  # F_SETPIPE_SZ
        except OSError as exc:
            pipe_error = exc.strerror
            break
    print(json.dumps({"inotify": inotify, "queues": queues, "pipes": pipe_error}), flush=True)
    time.sleep(12)  # hold it all while the other project's run looks
    engine.result.set({"inotify": inotify, "queues": queues, "pipes": pipe_error},
                      content_type="json")
'''

QUOTA_PROBE = '''
import ctypes, fcntl, os

def Run(engine):
    libc = ctypes.CDLL(None, use_errno=True)
    read_end, _ = os.pipe()
    engine.result.set({
        "inotify": libc.inotify_init1(0) != -1,
        "mqueue": libc.mq_open(b"/probe", os.O_CREAT | os.O_RDWR, 0o600, None) != -1,
        "pipe_size": fcntl.fcntl(read_end, 1032),  # F_GETPIPE_SZ: one page once over quota
    }, content_type="json")
'''


def test_one_projects_kernel_quotas_are_not_anothers(platform):
    """Per-user kernel quotas (inotify instances, POSIX message queue bytes, pipe buffer
    pages) exhausted by a run of one project leave a run of another project untouched: each
    sandbox is its own host uid (worker/sandbox/uids.py)."""
    hog = create_code(platform, QUOTA_HOG, timeout=40, project_uuid=str(uuid.uuid4()))
    probe = create_code(platform, QUOTA_PROBE, project_uuid=str(uuid.uuid4()))
    hogged: dict = {}
    thread = threading.Thread(target=lambda: hogged.update(run=_called(platform, hog["id"])))
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the hog runs; give it a moment to fill it all
        runs = requests.get(platform.url("/coderun"), params={"code_id": hog["id"]}).json()
        if runs and runs[0]["status"] == "running":
            time.sleep(3)
            break
        time.sleep(0.2)
    probed = call(platform, probe["id"])
    thread.join(60)
    assert hogged["run"]["status"] == "completed", hogged
    held = json.loads(hogged["run"]["result"])
    # The hog really reached each quota (its own uid's) ...
    assert held["inotify"] >= 100 and held["queues"] >= 1 and held["pipes"], held
    # ... and the other project's run, meanwhile, had all of its own.
    assert probed.status_code == 200, probed.text
    assert probed.json() == {"inotify": True, "mqueue": True, "pipe_size": 65536}


SOCKET_SNOOP = '''
import socket

def Run(engine):
    # What an earlier run of this environment left in the kernel's socket table ...
    seen = [line.split()[1:4] for name in ("/proc/net/tcp", "/proc/net/tcp6")
            for line in open(name).read().splitlines()[1:]]
    # ... then leave what would have stayed for a minute: a closed connection (TIME_WAIT).
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    client.close()
    accepted.close()
    server.close()
    engine.result.set({"seen": seen}, content_type="json")
'''


@pytest.mark.parametrize("mode", ["warm", "resident"])
def test_a_warm_run_sees_no_socket_of_the_previous_one(platform, mode: str):
    """A later run of one warm or resident code reads no socket (no 4-tuple, no remote
    address) of the run before it in /proc/net/tcp (THREAT_MODEL.md, "Warm environments")."""
    code = create_code(platform, SOCKET_SNOOP, mode=mode)
    runs: list[dict] = []
    deadline = time.monotonic() + 90
    while len(runs) < 3 and time.monotonic() < deadline:
        run = _called(platform, code["id"])
        if (labels := _labels(run["container_id"])) and labels["codeactions.kind"] == "warm" \
                and (not runs or run["container_id"] == runs[0]["container_id"]):
            runs.append(run)
        else:
            time.sleep(0.3)
    assert len(runs) == 3, "the warm environment did not serve the runs"
    for run in runs:
        assert run["status"] == "completed", run
        assert json.loads(run["result"]) == {"seen": []}, run["result"]


HOST_TRACES = '''
def Run(engine):
    engine.result.set({"cmdline": open("/proc/cmdline").read(),
                       "mounts": open("/proc/self/mountinfo").read()}, content_type="json")
'''


@pytest.mark.parametrize("mode", ["pool", "warm", "resident"])
def test_nothing_of_the_hosts_own_shows(platform, mode: str):
    """No kernel command line, and no path of the platform's own state in the mount table
    (the resolver files come from a neutral place)."""
    from tests.conftest import TEST_STATE

    code = create_code(platform, HOST_TRACES, mode=mode, network=True)
    seen = call(platform, code["id"]).json()
    assert seen["cmdline"] == ""
    assert str(TEST_STATE) not in seen["mounts"] and ".state" not in seen["mounts"]
    assert "/etc/resolv.conf" in seen["mounts"]
