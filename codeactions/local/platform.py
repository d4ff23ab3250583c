"""`make run`: the whole platform on this machine, in the foreground, under a supervisor
that restarts any part that dies (codeactions/local/supervisor.py); Ctrl-C stops it all.

Each dependency comes from the environment when configured (SPEC.md names) and is otherwise
embedded: PostgreSQL and Redis from PyPI packages that ship the real servers, RabbitMQ from
Debian, moto as the S3 server, the local Docker engine.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codeactions.local.supervisor import Backoff, Supervisor
from shared.settings import PREFIX, Settings

log = logging.getLogger("codeactions.local")

# Which env var points each embedded service at an external one instead.
EXTERNAL = {
    "postgres": PREFIX + "DB_URI",
    "redis": PREFIX + "REDIS",
    "rabbitmq": PREFIX + "RABBITMQ_URL",
    "s3": PREFIX + "S3_ENDPOINT",
}


def local_environment(
    urls: dict[str, str], base: dict[str, str], state_dir: Path
) -> dict[str, str]:
    """Environment for the platform's processes: what the operator set wins."""
    env = dict(base)
    # `make run` and `make test` (or two checkouts) share one Docker engine: each platform's
    # workers label their sandboxes with their own id, so none removes another's.
    stack = hashlib.sha256(str(state_dir.absolute()).encode()).hexdigest()[:8]
    env.setdefault(PREFIX + "WORKER_ID", f"{socket.gethostname()}-{stack}")
    # A local platform calls back local receivers; production allows public addresses only.
    env.setdefault(PREFIX + "CALLBACK_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128")
    for service, var in EXTERNAL.items():
        if not env.get(var) and urls.get(service):
            env[var] = urls[service]
    if env.get(PREFIX + "S3_ENDPOINT") == urls.get("s3"):
        # moto accepts any key; these are not secrets, and never reach a sandbox.
        env.setdefault(PREFIX + "S3_ACCESS_KEY_ID", "local")
        env.setdefault(PREFIX + "S3_SECRET_ACCESS_KEY", "local")
    return env


def start_services(  # noqa: ANN201
    state_dir: Path, base_port: int, base_env: dict[str, str], *, stop_docker: bool = False,
    private_docker: bool = False,
):
    """Start the embedded services that the environment does not replace. With
    `stop_docker`, a dockerd started here is stopped with the rest; `private_docker`
    starts a Docker engine of the stack's own (see `LocalStack`)."""
    from codeactions.local.services import LocalStack
    from codeactions.local.services.apt import apt_install

    # The engine images are built locally from a debootstrapped Debian (no registry here).
    apt_install("debootstrap", "debian-archive-keyring")
    external = {name: base_env[var] for name, var in EXTERNAL.items() if base_env.get(var)}
    stack = LocalStack(state_dir, base_port, overrides=external, stop_docker=stop_docker,
                       private_docker=private_docker)
    stack.start()
    return stack


def stack_urls(stack) -> dict[str, str]:  # noqa: ANN001 - LocalStack
    return {service: getattr(stack.urls, service) for service in EXTERNAL}


def say(message: str, err: bool = False) -> None:
    """Print, but never let a closed terminal or pipe stop the shutdown."""
    try:
        print(message, file=sys.stderr if err else sys.stdout, flush=True)
    except OSError:
        pass


def _run_step(argv: list[str], env: dict[str, str]) -> None:
    from codeactions.local.children import REPO_ROOT

    subprocess.run([sys.executable, "-m", "codeactions.cli", *argv], env=env, cwd=REPO_ROOT,
                   check=True)


def flower_credentials(state_dir: Path, env: dict[str, str]) -> str:
    """Flower can stop workers, so even on loopback it asks for a password: a random one,
    kept in the state directory (mode 0600), unless the operator set their own."""
    import secrets

    if env.get(PREFIX + "FLOWER_BASIC_AUTH"):
        return "credentials: " + PREFIX + "FLOWER_BASIC_AUTH"
    path = state_dir / "flower-password"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(18) + "\n")
    env[PREFIX + "FLOWER_BASIC_AUTH"] = "admin:" + path.read_text().strip()
    return f"user admin, password in {path}"


#: Children besides the API and the workers; `make run` starts them all.
EXTRAS = ("beat", "flower", "events")


@dataclass
class LocalPlatform:
    """A running local platform: its services, its children, their supervisor."""

    stack: Any  # codeactions.local.services.LocalStack
    supervisor: Supervisor
    env: dict[str, str]
    settings: Settings
    languages: list[str]
    metrics_ports: dict[str, int] = field(default_factory=dict)
    flower_login: str = ""

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    def stop(self) -> None:
        """Children, then their leftover sandboxes, then the services (dockerd too if it
        was started for this platform)."""
        try:
            self.supervisor.stop_children()
            remove_sandboxes(self.env)
            self.supervisor.stop_services()
        finally:
            self.stack.stop()


def start_local_platform(
    state_dir: Path, base_port: int, languages: list[str], base_env: dict[str, str], *,
    extras: tuple[str, ...] = EXTRAS, prune_images: bool = True, private_docker: bool = False,
    prepare_images: Callable[[dict[str, str]], None] | None = None,
    backoff: Callable[[], Backoff] = Backoff, child_logs: Path | None = None,
) -> LocalPlatform:
    """Services, schema, images, then the API, one worker per language and `extras`, all
    under one supervisor (not yet running: see `run_local_platform`). Settings come from
    `base_env` plus the services' URLs. `prepare_images(env)` replaces `codeactions images`;
    `child_logs`: a directory for each child's output (default: ours)."""
    from codeactions.local.supervisor import ChildUnit, DockerUnit, ServiceUnit

    state_dir = state_dir.absolute()
    # Ctrl-C stops everything it started, a Docker engine included.
    stack = start_services(state_dir, base_port, base_env, stop_docker=True,
                           private_docker=private_docker)
    supervisor = Supervisor(backoff)
    try:
        env = local_environment(stack_urls(stack), base_env, state_dir)
        env.setdefault(PREFIX + "STATE_DIR", str(state_dir))
        if stack.docker is not None and stack.docker.base_url:
            env["DOCKER_HOST"] = env[PREFIX + "DOCKER_HOST"] = stack.docker.base_url
        settings = Settings(**{k: v for k, v in env.items() if k.startswith(PREFIX)})
        for server in stack.servers:
            after = (lambda: _recreate_bucket(settings)) if server.name == "s3" else None
            supervisor.watch(ServiceUnit(server, after_start=after))
        if stack.docker is not None and stack.docker.started:
            supervisor.watch(DockerUnit(stack.docker))
        _run_step(["migrate"], env)
        if prepare_images is not None:
            prepare_images(env)
        else:
            _run_step(["images", *(["--prune"] if prune_images else []),
                       *sum((["--language", lang] for lang in languages), [])], env)
        platform = LocalPlatform(stack, supervisor, env, settings, languages)

        def child(name: str, argv: list[str]) -> None:
            output = child_logs / f"{name}.log" if child_logs is not None else None
            supervisor.start(ChildUnit(name, argv, env, output))

        child("api", ["api"])
        for index, language in enumerate(languages):
            port = settings.worker_metrics_port + index
            platform.metrics_ports[language] = port
            child(f"worker-{language}",
                  ["worker", "--language", language, "--metrics-port", str(port)])
        if "flower" in extras:
            platform.flower_login = flower_credentials(state_dir, env)
        for extra in EXTRAS:
            if extra in extras:  # beat: periodic jobs; flower: dashboard; events: projects
                child(extra, [extra])
    except BaseException:
        supervisor.stop()
        stack.stop()
        raise
    return platform


def _recreate_bucket(settings: Settings) -> None:
    """moto keeps its buckets in memory: after a restart the platform's is made again."""
    from shared.logs.archive import LogArchive

    LogArchive(settings).ensure_bucket()


def remove_sandboxes(env: dict[str, str]) -> int:
    """Remove the containers of this platform's workers that are still there (a worker
    killed after its grace period cannot clean up): they carry its worker id."""
    import docker

    worker_id = env.get(PREFIX + "WORKER_ID")
    if not worker_id:
        return 0
    try:
        client = docker.DockerClient(base_url=env["DOCKER_HOST"], timeout=30) \
            if env.get("DOCKER_HOST") else docker.from_env(timeout=30)
        removed = 0
        for container in client.api.containers(all=True, filters={"label": "codeactions.worker"}):
            if container["Labels"].get("codeactions.worker", "").startswith(worker_id + "-"):
                client.api.remove_container(container["Id"], force=True)
                removed += 1
        client.close()
    except Exception as exc:  # noqa: BLE001 - the engine may be gone; nothing to clean then
        log.warning("could not remove the workers' sandboxes: %s", exc)
        return 0
    if removed:
        say(f"codeactions: removed {removed} sandbox(es) the workers left")
    return removed


def run_local_platform(state_dir: Path, base_port: int, languages: list[str], *,
                       extras: tuple[str, ...] = EXTRAS, prune_images: bool = True) -> int:
    """`make run`: start, supervise until Ctrl-C or SIGTERM, stop everything."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stopping = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    say("codeactions: starting local services …")
    platform = start_local_platform(state_dir, base_port, languages, dict(os.environ),
                                    extras=extras, prune_images=prune_images)
    try:
        settings = platform.settings
        flower = ""
        if "flower" in extras:
            flower = (f"\ncodeactions: Flower on http://{settings.flower_address}:"
                      f"{settings.flower_port} ({platform.flower_login})")
        say(
            f"\ncodeactions: API on {platform.api_url}  "
            f"(docs: /docs, OpenAPI: /openapi.json, metrics: /metrics, health: /health)\n"
            f"codeactions: workers for {', '.join(languages)}; their metrics on "
            + ", ".join(f"{lang} :{port}" for lang, port in platform.metrics_ports.items())
            + flower
            + (f"\ncodeactions: beat runs the cleaner daily at {settings.cleaner_schedule_time}"
               " UTC" if "beat" in extras else "")
            + "\ncodeactions: a part that dies is restarted; Ctrl-C stops everything\n"
        )
        platform.supervisor.wake_on_signals()
        platform.supervisor.run(stopping)
    finally:
        say("codeactions: stopping …")
        platform.stop()
        say("codeactions: stopped")
    return 0


def wait_for_http(url: str, seconds: float, children: list[subprocess.Popen]) -> None:
    """Until `url` answers 200; a child that exits meanwhile fails the wait at once."""
    import requests

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _fail_if_exited(children)
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {seconds}s")


def wait_for_workers(
    settings: Settings, languages: list[str], seconds: float, children: list[subprocess.Popen]
) -> None:
    """Until each language's worker answers a ping on the broker under its own name."""
    from shared.messaging.celery_app import make_celery
    from worker.preparation import worker_name

    app = make_celery(settings)
    deadline = time.monotonic() + seconds
    for language in languages:
        destination = [f"{worker_name([language], settings)}@{socket.gethostname()}"]
        while not _pinged(app, destination):
            _fail_if_exited(children)
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {language} worker did not answer in {seconds}s")


def _pinged(app, destination: list[str]) -> bool:  # noqa: ANN001 - a Celery app
    """A broker that just restarted may drop the connection: that is "not yet", not a
    failure."""
    import kombu.exceptions

    try:
        return bool(app.control.ping(destination=destination, timeout=1.0))
    except (OSError, kombu.exceptions.OperationalError) as exc:
        log.debug("ping not delivered yet: %s", exc)
        time.sleep(0.5)
        return False


def _fail_if_exited(children: list[subprocess.Popen]) -> None:
    for child in children:
        if child.poll() is not None:
            raise RuntimeError(f"{child.args} exited with {child.returncode}")
