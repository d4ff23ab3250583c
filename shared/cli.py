"""`codeactions`: the one command. Each subcommand imports only what it needs, when run."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from shared.settings import LANGUAGES, load_settings

REPO_ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("codeactions")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # Client libraries' wire chatter drowns what matters even at debug level.
    for noisy in ("amqp", "kombu", "botocore", "boto3", "urllib3", "docker", "redis"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLogger().level))


def built_languages() -> list[str]:
    """Languages whose engine is defined in this checkout (engines/<language>/Dockerfile)."""
    return [lang for lang in LANGUAGES if (REPO_ROOT / "engines" / lang / "Dockerfile").exists()]


# --- subcommands ----------------------------------------------------------------------


def cmd_api(args: argparse.Namespace) -> int:
    """Serve the API with gunicorn (threads: a sync call waits on Redis, not on a CPU)."""
    from gunicorn.app.base import BaseApplication

    from api.app import create_app

    settings = load_settings()

    class _Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{settings.host}:{settings.port}")
            self.cfg.set("workers", args.workers or settings.api_workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", args.threads)
            self.cfg.set("timeout", 330)  # the longest code timeout is 300 s
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("accesslog", "-" if args.access_log else None)

        def load(self):  # noqa: ANN202
            return create_app(settings)

    _Server().run()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from shared.tasks import run_queue
    from worker.app import create_worker_app
    from worker.preparation import prepare_worker_host, worker_name

    settings = load_settings()
    languages = args.language or [
        lang.strip() for lang in settings.worker_languages.split(",") if lang.strip()
    ]
    unknown = set(languages) - set(LANGUAGES)
    if unknown:
        print(f"unknown language(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    _setup_logging(settings.log_level)
    tags = prepare_worker_host(settings, languages)
    log.info("engine images ready: %s", tags)
    name = worker_name(languages, settings)
    app = create_worker_app(settings, name, languages)
    app.worker_main(
        [
            "worker",
            "--queues", ",".join(run_queue(lang) for lang in languages),
            "--pool", "threads",
            "--concurrency", str(args.concurrency or settings.worker_pool_size),
            "--hostname", f"{name}@%h",
            "--loglevel", settings.log_level.upper(),
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from alembic import command
    from alembic.config import Config

    config = Config(str(REPO_ROOT / "alembic.ini"))
    command.upgrade(config, args.revision)
    from shared.services.codelib_catalog import sync_catalog

    sync_catalog(load_settings())
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    import docker

    from worker.images import ensure_images, remove_stale_images

    _setup_logging("info")
    client = docker.from_env()
    tags = ensure_images(client, args.language or built_languages())
    for language, tag in tags.items():
        print(f"{language}: {tag}")
    if args.prune:
        for tag in remove_stale_images(client, tags.values()):
            print(f"removed stale {tag}")
    return 0


def cmd_standalone(args: argparse.Namespace) -> int:
    from shared.local_platform import run_local_platform

    return run_local_platform(
        state_dir=Path(args.state_dir), base_port=args.base_port, languages=built_languages()
    )


def cmd_bench(args: argparse.Namespace) -> int:
    from shared.bench.runner import run_bench

    _setup_logging("warning")
    return run_bench(
        url=args.url, base_port=args.base_port, state_dir=Path(args.state_dir),
        languages=args.language or built_languages(), quick=args.quick,
        results_dir=REPO_ROOT / "bench" / "results",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="codeactions", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument("--workers", type=int, default=0)
    api.add_argument("--threads", type=int, default=32)
    api.add_argument("--access-log", action="store_true")
    api.set_defaults(func=cmd_api)

    worker = sub.add_parser("worker", help="run code from the language queues")
    worker.add_argument("--language", action="append", choices=LANGUAGES)
    worker.add_argument("--concurrency", type=int, default=0)
    worker.set_defaults(func=cmd_worker)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("revision", nargs="?", default="head")
    migrate.set_defaults(func=cmd_migrate)

    images = sub.add_parser("images", help="build the engine images (cached by content)")
    images.add_argument("--language", action="append", choices=LANGUAGES)
    images.add_argument("--prune", action="store_true",
                        help="remove older engine images (only when no older worker runs)")
    images.set_defaults(func=cmd_images)

    standalone = sub.add_parser("standalone", help="the whole platform on this machine")
    standalone.add_argument("--state-dir", default=os.environ.get(
        "FLOWS_CODE_ACTIONS_STATE_DIR", ".state/dev"))
    standalone.add_argument("--base-port", type=int, default=15430)
    standalone.set_defaults(func=cmd_standalone)

    bench = sub.add_parser("bench", help="measure the fast path (starts its own platform)")
    bench.add_argument("--url", default=os.environ.get("BENCH_URL"),
                       help="measure this running platform instead of starting one")
    bench.add_argument("--base-port", type=int, default=16430)
    bench.add_argument("--state-dir", default=".state/bench")
    bench.add_argument("--language", action="append", choices=LANGUAGES)
    bench.add_argument("--quick", action="store_true", help="fewer calls: checks the bench")
    bench.set_defaults(func=cmd_bench)

    args = parser.parse_args(argv)
    return args.func(args)


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the supervisor dies (even by SIGKILL)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def spawn_child(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    """A child of the local platform, in its own process group so Ctrl-C is ours to relay,
    and tied to our life so a crashed supervisor leaves no API or worker behind."""
    return subprocess.Popen(
        [sys.executable, "-m", "shared.cli", *argv], env=env, cwd=REPO_ROOT,
        start_new_session=True, preexec_fn=_die_with_parent,
    )


def stop_children(children: list[subprocess.Popen], grace: float = 15.0) -> None:
    for child in reversed(children):
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in reversed(children):
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


if __name__ == "__main__":
    sys.exit(main())
