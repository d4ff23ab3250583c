"""The platform `make chaos` breaks: `make run`'s own (services, API, workers, beat, events
under the supervisor of codeactions/local/supervisor.py), on ports and a state directory of
its own, with a Docker engine of its own too — restarting dockerd must not touch the
machine's engine, whose containers belong to whoever else works here."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codeactions.local.platform import LocalPlatform, start_local_platform
from codeactions.local.services.processes import listening_pids
from codeactions.local.supervisor import Backoff
from shared.settings import PREFIX

#: The supervisor's delays as in `make run`, but back to 1 s after 8 s up (not a minute):
#: the worker scenario kills the same worker twenty times in a few minutes, and measures
#: what a run goes through, not how patient the supervisor is.
CHAOS_BACKOFF_RESET = 8.0


@dataclass
class ChaosPlatform:
    local: LocalPlatform
    base_port: int
    api_workers: int
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _celery: Any = None

    def celery(self):  # noqa: ANN201
        """A Celery client of the platform's broker (for pings), made once."""
        if self._celery is None:
            from shared.messaging.celery_app import make_celery

            self._celery = make_celery(self.settings)
        return self._celery

    @property
    def api_url(self) -> str:
        return self.local.api_url

    @property
    def supervisor(self):  # noqa: ANN201
        return self.local.supervisor

    @property
    def settings(self):  # noqa: ANN201
        return self.local.settings

    def server(self, name: str):  # noqa: ANN201
        return next(s for s in self.local.stack.servers if s.name == name)

    def pid(self, unit: str) -> int | None:
        """The main process of a supervised part (api = gunicorn's master)."""
        return self.supervisor.unit(unit).pid

    def broker_pid(self) -> int | None:
        """RabbitMQ's Erlang VM (the broker proper, under its start script)."""
        pids = listening_pids(self.server("rabbitmq").port)
        return min(pids) if pids else None

    def api_worker_pids(self) -> list[int]:
        master = self.pid("api")
        return children_of(master) if master else []

    def run_supervisor(self) -> None:
        self._thread = threading.Thread(target=self.supervisor.run, args=(self._stop, 0.2),
                                        name="supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.local.stop()


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(entry.name))
    return found


def copy_images(env: dict[str, str], languages: list[str]) -> None:
    """The engine images (and their base), built or found on the machine's engine, copied
    into the private one when it lacks them: building them there would take minutes."""
    from codeactions.local.children import REPO_ROOT
    from worker.images import base_image_tag, engine_image_tag

    host_env = {k: v for k, v in env.items() if k not in ("DOCKER_HOST", PREFIX + "DOCKER_HOST")}
    subprocess.run([sys.executable, "-m", "codeactions.cli", "images",
                    *sum((["--language", lang] for lang in languages), [])],
                   env=host_env, cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
    private = env["DOCKER_HOST"]
    tags = [base_image_tag(), *(engine_image_tag(lang) for lang in languages)]
    missing = [tag for tag in tags if subprocess.run(
        ["docker", "-H", private, "image", "inspect", tag], capture_output=True,
    ).returncode != 0]
    if not missing:
        return
    print(f"chaos: copying {', '.join(missing)} into the private Docker engine …", flush=True)
    save = subprocess.Popen(["docker", "save", *missing], stdout=subprocess.PIPE,
                            env=host_env)
    subprocess.run(["docker", "-H", private, "load", "-q"], stdin=save.stdout, check=True,
                   stdout=subprocess.DEVNULL)
    save.stdout.close()
    if save.wait() != 0:
        raise RuntimeError("docker save failed")


@contextmanager
def chaos_platform(base_port: int, state_dir: Path, languages: list[str]) -> Iterator[
        ChaosPlatform]:
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)
                and k != "DOCKER_HOST"}
    api_workers = 2
    base_env.update({
        PREFIX + "PORT": str(base_port + 10),
        PREFIX + "WORKER_METRICS_PORT": str(base_port + 20),
        PREFIX + "S3_BUCKET_NAME": "codeactions-chaos",
        PREFIX + "LOG_LEVEL": "info",
        PREFIX + "API_WORKERS": str(api_workers),
        # The per-code rate limit would refuse the load: not what is measured here.
        PREFIX + "CODE_LIMITER_MAX_REQUESTS": "1000000000",
    })
    print(f"chaos: starting a platform in {state_dir} (ports from {base_port}, its own "
          "Docker engine) …", flush=True)
    local = start_local_platform(
        state_dir.absolute(), base_port, languages, base_env, extras=("beat", "events"),
        private_docker=True, prepare_images=lambda env: copy_images(env, languages),
        backoff=lambda: Backoff(reset_after=CHAOS_BACKOFF_RESET),
        child_logs=state_dir.absolute() / "logs",
    )
    platform = ChaosPlatform(local, base_port, api_workers)
    try:
        platform.run_supervisor()
        from codeactions.local.platform import wait_for_http

        wait_for_http(platform.api_url + "/healthz", 300, [])
        for language in languages:
            if not wait_worker(platform, language, 300):
                raise RuntimeError(f"the {language} worker did not answer in 300 s")
        time.sleep(2)  # the warm pools fill
        yield platform
    finally:
        print("chaos: stopping the platform …", flush=True)
        platform.stop()


def worker_destination(platform: ChaosPlatform, language: str) -> str:
    import socket

    from worker.preparation import worker_name

    return f"{worker_name([language], platform.settings)}@{socket.gethostname()}"


def worker_answers(platform: ChaosPlatform, language: str) -> bool:
    """The language's worker answers a ping on the broker: it is connected and consuming."""
    try:
        return bool(platform.celery().control.ping(
            destination=[worker_destination(platform, language)], timeout=1.0))
    except Exception:  # noqa: BLE001 - broker down or refusing: not answering
        return False


def wait_worker(platform: ChaosPlatform, language: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if worker_answers(platform, language):
            return True
        time.sleep(0.5)
    return False
