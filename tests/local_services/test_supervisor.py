"""`make run`'s supervisor with real processes: a small platform (services, the API, a
Python worker) started as `codeactions standalone`, whose parts are SIGKILLed one by one;
each comes back and serves again. Ctrl-C then stops everything and leaves nothing behind.

The tests run in file order on one platform (starting it takes a minute).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import requests

from codeactions.local.services.processes import (
    MARKER_VARIABLE,
    is_alive,
    pid_from_file,
)
from codeactions.local.services.readiness import port_accepts_connections
from tests.conftest import REPO_ROOT, TEST_BASE_PORT

# Past the session stack (base .. base+110) and test_stack's bases (+500 .. +520).
BASE = TEST_BASE_PORT + 540
API_PORT = BASE + 10
PREFIX = "FLOWS_CODE_ACTIONS_"
PROJECT = "00000000-0000-4000-8000-0000000005a9"
SOURCE = 'def Run(engine):\n    engine.result.set({"ok": True})\n'


@dataclass
class Supervised:
    process: subprocess.Popen
    state_dir: Path
    output: Path
    worker_id: str

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{API_PORT}"

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def children(self) -> dict[int, list[str]]:
        """The supervisor's child processes: pid -> argv."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except (OSError, IndexError, ValueError):
                continue
            if ppid == self.process.pid:
                found[int(entry.name)] = argv
        return found

    def worker_pid(self) -> int | None:
        for pid, argv in self.children().items():
            if "worker" in argv and "python" in argv and is_alive(pid):
                return pid
        return None

    def postgres_pid(self) -> int | None:
        return pid_from_file(self.state_dir / "postgres" / "postmaster.pid", "postgres")

    def redis_pid(self) -> int | None:
        return pid_from_file(self.state_dir / "redis" / "redis.pid", "redis-server")


def wait_for(what: str, check: Callable[[], object], seconds: float = 90) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {seconds} s")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    env.update({
        PREFIX + "PORT": str(API_PORT),
        PREFIX + "WORKER_METRICS_PORT": str(BASE + 20),
        PREFIX + "S3_BUCKET_NAME": "codeactions-supervisor-test",
        PREFIX + "API_WORKERS": "1",
        PREFIX + "WARM_POOL_SIZE": "1",
        PREFIX + "LOG_LEVEL": "info",
    })
    return env


@pytest.fixture(scope="module")
def supervised() -> Iterator[Supervised]:
    # Outside pytest's basetemp: its 0700 reset would lock the postgres user out.
    scratch = Path(tempfile.mkdtemp(prefix="codeactions-supervisor-"))
    state_dir = scratch / "state"
    output = scratch / "standalone.log"
    with output.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "codeactions.cli", "standalone", "--state-dir",
             str(state_dir), "--base-port", str(BASE), "--language", "python",
             "--without", "beat", "--without", "flower", "--without", "events",
             "--keep-images"],
            env=_env(), cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    from codeactions.local.platform import local_environment

    worker_id = local_environment({}, {}, state_dir)[PREFIX + "WORKER_ID"]
    platform = Supervised(process, state_dir, output, worker_id)
    try:
        # Within pytest-timeout's 300 s, so that a platform that does not come up says why.
        try:
            wait_for("the API", lambda: _answers(platform.api + "/healthz"), 240)
        except AssertionError as exc:
            tail = output.read_text(errors="replace")[-4000:]
            raise AssertionError(f"{exc}; standalone exit status {process.poll()}, its output "
                                 f"ends:\n{tail}") from exc
        yield platform
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if os.environ.get("CODEACTIONS_TEST_KEEP_LOGS"):
            print(output.read_text(errors="replace")[-20000:])
        shutil.rmtree(scratch, ignore_errors=True)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def code_id(supervised: Supervised) -> str:
    response = requests.post(supervised.api + "/code", params={
        "name": "supervised", "language": "python", "type": "endpoint",
        "project_uuid": PROJECT}, data=SOURCE.encode(), timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def served(supervised: Supervised, code_id: str) -> bool:
    """A sync call of the code answers 200 with its result."""
    try:
        response = requests.post(f"{supervised.api}/action/endpoint/{code_id}", timeout=70)
    except requests.RequestException:
        return False
    return response.status_code == 200 and response.json() == {"ok": True}


def test_a_killed_worker_is_restarted_and_serves_again(supervised, code_id) -> None:  # noqa: ANN001
    wait_for("a first sync call", lambda: served(supervised, code_id), 120)
    killed = wait_for("the worker", supervised.worker_pid)

    os.kill(killed, signal.SIGKILL)

    restarted = wait_for("a new worker", lambda: (supervised.worker_pid() or killed) != killed
                         and supervised.worker_pid(), 30)
    assert restarted != killed
    wait_for("a sync call after the restart", lambda: served(supervised, code_id), 120)
    log = supervised.log()
    assert "worker-python exited (killed by SIGKILL)" in log
    assert "worker-python restarted" in log
    # Reaped: the killed worker is not left as a zombie.
    assert not Path(f"/proc/{killed}").exists()


@pytest.mark.parametrize("service", ["postgres", "redis"])
def test_a_killed_service_is_restarted_and_the_platform_serves_again(
    supervised, code_id, service: str,  # noqa: ANN001
) -> None:
    pid_of = supervised.postgres_pid if service == "postgres" else supervised.redis_pid
    killed = wait_for(f"{service}'s pid", pid_of)

    os.kill(killed, signal.SIGKILL)

    wait_for(f"{service} back", lambda: (pid_of() or killed) != killed, 90)
    wait_for("the code read back", lambda: requests.get(
        f"{supervised.api}/code/{code_id}", timeout=10).status_code == 200, 60)
    wait_for("a sync call after the restart", lambda: served(supervised, code_id), 120)
    # Calls may be served before the restart is reported: without Redis they still are.
    wait_for(f"{service}'s restart reported",
             lambda: f"{service} restarted" in supervised.log(), 60)
    assert f"{service} exited (killed by SIGKILL)" in supervised.log()
    assert not Path(f"/proc/{killed}").exists()  # reaped, no zombie holding the lock file


def test_a_dockerd_it_started_is_restarted_when_killed() -> None:
    """dockerd refuses to start while the pid in its pid file exists, even as a zombie:
    the supervisor reaps the dead one, removes the stale file and starts it again. (A
    Docker engine of the test's own: the machine's serves everyone else.)"""
    import threading

    from codeactions.local.services import LocalStack
    from codeactions.local.services.docker_engine import docker_engine_answers
    from codeactions.local.supervisor import DockerUnit, Supervisor

    scratch = Path(tempfile.mkdtemp(prefix="codeactions-dockerd-"))
    elsewhere = {"postgres": "postgresql://unused", "redis": "redis://unused",
                 "rabbitmq": "amqp://unused//", "s3": "http://unused"}
    stack = LocalStack(scratch / "state", BASE, elsewhere, private_docker=True)
    stop = threading.Event()
    try:
        stack.start()
        engine = stack.docker
        assert engine is not None and engine.started and docker_engine_answers(engine.base_url)
        supervisor = Supervisor()
        unit = supervisor.watch(DockerUnit(engine))
        loop = threading.Thread(target=supervisor.run, args=(stop, 0.2), daemon=True)
        loop.start()
        killed = unit.pid

        os.kill(killed, signal.SIGKILL)

        wait_for("dockerd back", lambda: unit.pid not in (None, killed)
                 and docker_engine_answers(engine.base_url), 90)
        assert [(e.unit, e.what, e.detail) for e in supervisor.events][:1] == [
            ("dockerd", "exited", "killed by SIGKILL")]
        assert not Path(f"/proc/{killed}").exists()
    finally:
        stop.set()
        stack.stop()
        _unmount_under(scratch)  # a SIGKILLed dockerd leaves its data root bind-mounted
        shutil.rmtree(scratch, ignore_errors=True)


def _unmount_under(directory: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mount_point in sorted(mounts, reverse=True):
        if mount_point.startswith(str(directory) + "/"):
            subprocess.run(["umount", "-l", mount_point], check=False)


def test_ctrl_c_stops_everything_and_leaves_nothing(supervised) -> None:  # noqa: ANN001
    children = list(supervised.children())
    services = [pid for pid in (supervised.postgres_pid(), supervised.redis_pid()) if pid]
    assert children and len(services) == 2

    supervised.process.send_signal(signal.SIGINT)

    assert supervised.process.wait(120) == 0
    assert not [pid for pid in children + services if is_alive(pid)]
    marker = f"{MARKER_VARIABLE}={supervised.state_dir.absolute()}#".encode()
    assert not _processes_with(marker), "a service process outlived the supervisor"
    for offset in (0, 1, 2, 3, 10):
        assert not port_accepts_connections(BASE + offset), f"port {BASE + offset} still open"
    client = docker.from_env()
    left = [c for c in client.api.containers(all=True, filters={"label": "codeactions.worker"})
            if c["Labels"]["codeactions.worker"].startswith(supervised.worker_id + "-")]
    client.close()
    assert left == []
    assert "codeactions: stopped" in supervised.log()


def _processes_with(marker: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(item.startswith(marker) for item in environ) and is_alive(int(entry.name)):
            found.append(int(entry.name))
    return found
