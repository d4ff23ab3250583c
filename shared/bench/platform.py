"""The platform `make bench` measures: one it starts itself (its own state dir and ports, so
`make run` and `make test` may stay up), or a running one given by URL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

from shared.settings import PREFIX


@dataclass
class BenchPlatform:
    base_url: str
    own: bool
    env: dict[str, str] = field(default_factory=dict)
    workers: dict[str, int] = field(default_factory=dict)  # language -> worker pid

    def url(self, path: str) -> str:
        return self.base_url + path


def worker_pids() -> dict[str, int]:
    """Workers of any platform on this machine, by language (a running platform's)."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"shared.cli" in argv and b"worker" in argv and b"--language" in argv:
            language = argv[argv.index(b"--language") + 1].decode()
            found.setdefault(language, int(entry.name))
    return found


@contextmanager
def bench_platform(url: str | None, base_port: int, state_dir: Path,
                   languages: list[str]) -> Iterator[BenchPlatform]:
    if url:
        requests.get(url.rstrip("/") + "/healthz", timeout=5).raise_for_status()
        yield BenchPlatform(url.rstrip("/"), own=False, workers=worker_pids())
        return
    yield from _own_platform(base_port, state_dir, languages)


def _own_platform(base_port: int, state_dir: Path, languages: list[str]) -> Iterator[BenchPlatform]:
    from shared.cli import REPO_ROOT, spawn_child, stop_children
    from shared.local_platform import local_environment, stack_urls, start_services

    state_dir = state_dir.absolute()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    print(f"bench: starting a platform in {state_dir} (ports from {base_port}) …", flush=True)
    stack = start_services(state_dir, base_port, {})
    children: list[subprocess.Popen] = []
    try:
        env = local_environment(stack_urls(stack), base_env, state_dir)
        api_port = base_port + 10
        env.update({
            PREFIX + "PORT": str(api_port),
            PREFIX + "STATE_DIR": str(state_dir),
            PREFIX + "S3_BUCKET_NAME": "codeactions-bench",
            PREFIX + "LOG_LEVEL": "warning",
            # The per-code rate limit would cut the throughput runs short: not measured here.
            PREFIX + "CODE_LIMITER_MAX_REQUESTS": "1000000000",
        })
        for step in (["migrate"], ["images"]):
            subprocess.run([sys.executable, "-m", "shared.cli", *step], env=env, cwd=REPO_ROOT,
                           check=True, stdout=subprocess.DEVNULL)
        children.append(spawn_child(["api"], env))
        workers = {}
        for language in languages:
            child = spawn_child(["worker", "--language", language], env)
            children.append(child)
            workers[language] = child.pid
        platform = BenchPlatform(f"http://127.0.0.1:{api_port}", own=True, env=env,
                                 workers=workers)
        _wait_ready(platform, children, languages)
        yield platform
    finally:
        stop_children(children)
        stack.stop()


def _wait_ready(platform: BenchPlatform, children: list[subprocess.Popen],
                languages: list[str], seconds: float = 300) -> None:
    from shared.celery_app import make_celery
    from shared.settings import Settings
    from worker.preparation import worker_name

    deadline = time.monotonic() + seconds
    while True:
        for child in children:
            if child.poll() is not None:
                raise RuntimeError(f"{child.args} exited with {child.returncode}")
        try:
            if requests.get(platform.url("/healthz"), timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the bench platform's API did not come up")
        time.sleep(0.3)
    settings = Settings(**{k: v for k, v in platform.env.items() if k.startswith(PREFIX)})
    app = make_celery(settings)
    for language in languages:
        name = f"{worker_name([language], settings)}@{socket.gethostname()}"
        while not app.control.ping(destination=[name], timeout=1.0):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {language} worker did not come up")
    time.sleep(2)  # the warm pools fill

