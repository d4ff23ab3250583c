"""`make run`: the whole platform on this machine, in the foreground, Ctrl-C stops it all.

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
import time
from pathlib import Path

from shared.settings import PREFIX, Settings, load_settings

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
    state_dir: Path, base_port: int, base_env: dict[str, str], *, stop_docker: bool = False
):
    """Start the embedded services that the environment does not replace. With
    `stop_docker`, a dockerd started here is stopped with the rest."""
    from codeactions.local.services import LocalStack
    from codeactions.local.services.apt import apt_install

    # The engine images are built locally from a debootstrapped Debian (no registry here).
    apt_install("debootstrap", "debian-archive-keyring")
    external = {name: base_env[var] for name, var in EXTERNAL.items() if base_env.get(var)}
    stack = LocalStack(state_dir, base_port, overrides=external, stop_docker=stop_docker)
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


def run_local_platform(state_dir: Path, base_port: int, languages: list[str]) -> int:
    from codeactions.local.children import spawn_child, stop_children

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = load_settings()
    stopping = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    say("codeactions: starting local services …")
    # Ctrl-C stops everything make run started, a Docker engine included.
    stack = start_services(state_dir.absolute(), base_port, dict(os.environ), stop_docker=True)
    children: list[subprocess.Popen] = []
    try:
        env = local_environment(stack_urls(stack), dict(os.environ), state_dir)
        env.setdefault(PREFIX + "STATE_DIR", str(state_dir.absolute()))
        _run_step(["migrate"], env)
        _run_step(["images", "--prune", *sum((["--language", lang] for lang in languages), [])],
                  env)
        children.append(spawn_child(["api"], env))
        metrics_ports = {lang: settings.worker_metrics_port + i for i, lang in enumerate(languages)}
        for language in languages:
            children.append(spawn_child(
                ["worker", "--language", language, "--metrics-port", str(metrics_ports[language])],
                env,
            ))
        # Operations: periodic jobs (retention, stuck runs) and the Celery dashboard.
        children.append(spawn_child(["beat"], env))
        flower_login = flower_credentials(state_dir.absolute(), env)
        children.append(spawn_child(["flower"], env))
        children.append(spawn_child(["events"], env))  # project and permission events
        say(
            f"\ncodeactions: API on http://{settings.host}:{settings.port}  "
            f"(docs: /docs, OpenAPI: /openapi.json, metrics: /metrics, health: /health)\n"
            f"codeactions: workers for {', '.join(languages)}; their metrics on "
            + ", ".join(f"{lang} :{port}" for lang, port in metrics_ports.items())
            + f"\ncodeactions: Flower on http://{settings.flower_address}:{settings.flower_port}"
            f" ({flower_login})"
            f"; beat runs the cleaner daily at {settings.cleaner_schedule_time} UTC"
            "\ncodeactions: Ctrl-C stops everything\n"
        )
        while not stopping:
            for child in children:
                if child.poll() is not None:
                    say(f"codeactions: a child exited ({child.args[3:]}); stopping", err=True)
                    stopping = True
            time.sleep(0.5)
    finally:
        say("codeactions: stopping …")
        try:
            stop_children(children)
        finally:
            stack.stop()
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
        while not app.control.ping(destination=destination, timeout=1.0):
            _fail_if_exited(children)
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {language} worker did not answer in {seconds}s")


def _fail_if_exited(children: list[subprocess.Popen]) -> None:
    for child in children:
        if child.poll() is not None:
            raise RuntimeError(f"{child.args} exited with {child.returncode}")
