"""The platform `make bench` measures: one it starts itself (its own state dir and ports, so
`make run` and `make test` may stay up), or a running one given by URL."""

from __future__ import annotations

import os
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
        if b"codeactions.cli" in argv and b"worker" in argv and b"--language" in argv:
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
    from codeactions.local.children import REPO_ROOT, spawn_child, stop_children
    from codeactions.local.platform import (
        local_environment,
        stack_urls,
        start_services,
        wait_for_http,
        wait_for_workers,
    )
    from shared.settings import Settings

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
            subprocess.run([sys.executable, "-m", "codeactions.cli", *step], env=env, cwd=REPO_ROOT,
                           check=True, stdout=subprocess.DEVNULL)
        children.append(spawn_child(["api"], env))
        workers = {}
        for index, language in enumerate(languages):
            # Each worker its own metrics port (they would all take the default one).
            metrics_port = str(base_port + 20 + index)
            child = spawn_child(["worker", "--language", language, "--metrics-port",
                                 metrics_port], env)
            children.append(child)
            workers[language] = child.pid
        platform = BenchPlatform(f"http://127.0.0.1:{api_port}", own=True, env=env,
                                 workers=workers)
        settings = Settings(**{k: v for k, v in env.items() if k.startswith(PREFIX)})
        wait_for_http(platform.url("/healthz"), 300, children)
        wait_for_workers(settings, languages, 300, children)
        time.sleep(2)  # the warm pools fill
        yield platform
    finally:
        stop_children(children)
        stack.stop()
