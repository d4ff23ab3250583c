"""`codeactions`: the one command. Each subcommand imports only what it needs, when run."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from datetime import date
from pathlib import Path

from pydantic import ValidationError

from shared.settings import LANGUAGES, Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("codeactions")


def _setup_logging(
    settings: Settings, process: str = "codeactions", *, level: str | None = None,
    celery: bool = False,
) -> None:
    """JSON lines in production, readable text in dev (shared/observability/log_format.py).
    `celery`: a Celery process, told that logging is configured already (ours, not its own)."""
    from shared.observability.log_format import configure_logging

    if level is not None:
        settings = settings.model_copy(update={"log_level": level})
    configure_logging(settings, process)
    if celery:
        from celery import signals

        signals.setup_logging.connect(lambda **_: None, weak=False)


# --- subcommands ----------------------------------------------------------------------


def cmd_api(args: argparse.Namespace) -> int:
    """Serve the API with gunicorn (threads: a sync call waits on Redis, not on a CPU)."""
    settings = load_settings()
    # Before anything imports prometheus_client: it picks multiprocess mode at import.
    from api.server import prepare_metrics_dir

    prepare_metrics_dir(settings)
    _setup_logging(settings, "api")
    from gunicorn.app.base import BaseApplication

    from api.app import create_app
    from api.http_server import ThreadWorker
    from api.received_headers import keep_received_headers
    from api.server import GunicornLogger, mark_worker_dead

    class _Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{settings.host}:{settings.port}")
            self.cfg.set("workers", args.workers or settings.api_workers)
            # gthread with a bounded read and JSON errors (api/http_server.py).
            ThreadWorker.read_timeout = settings.api_request_read_timeout
            self.cfg.set("worker_class", "api.http_server.ThreadWorker")
            self.cfg.set("threads", args.threads)
            self.cfg.set("timeout", 330)  # the longest code timeout is 300 s
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("accesslog", "-" if args.access_log else None)
            # Path only: a query string may carry what a caller passes to user code.
            self.cfg.set("access_log_format", '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms')
            self.cfg.set("logger_class", GunicornLogger)
            self.cfg.set("child_exit", mark_worker_dead)
            # Stored code gets `_` headers and repeated ones as received; the platform still
            # sees neither (api/received_headers.py), and no header sets a WSGI variable.
            self.cfg.set("header_map", "dangerous")
            self.cfg.set("forwarder_headers", "")
            self.cfg.set("pre_request", keep_received_headers)

        def load(self):  # noqa: ANN202 - in each gunicorn worker process, after the fork
            from codeactions.bootstrap import bootstrap

            return create_app(bootstrap(settings))

    _Server().run()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    # A worker is one process: its metrics stay in memory, never in an API's directory.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    from shared.messaging.tasks import CALLBACK_QUEUE, run_queue
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
    _setup_logging(settings, "worker-" + "-".join(languages), celery=True)
    tags = prepare_worker_host(settings, languages)
    log.info("engine images ready: %s", tags)
    name = worker_name(languages, settings)
    from codeactions.bootstrap import bootstrap

    concurrency = args.concurrency or settings.worker_pool_size
    app = create_worker_app(bootstrap(settings), name, languages, concurrency)
    _serve_worker_metrics(settings, languages, args.metrics_port)
    queues = [*(run_queue(lang) for lang in languages), CALLBACK_QUEUE]
    app.worker_main(_celery_worker_argv(settings, queues, concurrency, f"{name}@%h"))
    return 0


def _celery_worker_argv(
    settings, queues: list[str], concurrency: int, hostname: str, *extra: str  # noqa: ANN001
) -> list[str]:
    """How every Celery worker of ours starts: threads (runs wait on Docker, not on a CPU),
    no gossip or mingle (nothing uses them, and they cost a broker round trip at start)."""
    return [
        "worker", *extra,
        "--queues", ",".join(queues),
        "--pool", "threads",
        "--concurrency", str(concurrency),
        "--hostname", hostname,
        "--loglevel", settings.log_level.upper(),
        "--without-gossip",
        "--without-mingle",
    ]


def cmd_events(args: argparse.Namespace) -> int:
    """Apply the platform's project and permission events until stopped (SIGTERM/Ctrl-C)."""
    from codeactions.bootstrap import bootstrap
    from worker.events_consumer import EventsConsumer

    settings = load_settings()
    _setup_logging(settings, "events")
    # pika logs our existence probes' 404s and every lost connection with a traceback; the
    # consumer logs what matters itself.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    if not settings.rabbitmq_url:
        log.warning("FLOWS_CODE_ACTIONS_RABBITMQ_URL is empty: event consumers are disabled")
        return 0
    platform = bootstrap(settings)
    consumer = EventsConsumer(platform.settings, platform.db)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: consumer.stop())
    consumer.run_forever()
    return 0


def _serve_worker_metrics(settings: Settings, languages: list[str], metrics_port: int | None
                          ) -> None:
    """A worker's metrics on its own port."""
    from worker import metrics

    port = settings.worker_metrics_port if metrics_port is None else metrics_port
    if port:
        try:
            metrics.serve(settings.host, port, languages)
        except OSError as exc:  # runs matter more than their metrics
            log.error("worker metrics not served on port %d: %s", port, exc)


def cmd_beat(args: argparse.Namespace) -> int:
    """Celery beat for the periodic jobs, embedded in the worker that executes them."""
    from shared.messaging.tasks import HOUSEKEEPING_QUEUE
    from worker.beat import create_beat_app, schedule_file

    settings = load_settings()
    _setup_logging(settings, "beat", celery=True)
    from codeactions.bootstrap import bootstrap

    app = create_beat_app(bootstrap(settings))
    hostname = f"housekeeping-{settings.worker_id or '%h'}-{os.getpid()}@%h"
    app.worker_main(_celery_worker_argv(
        settings, [HOUSEKEEPING_QUEUE], 2, hostname,
        "--beat", "--schedule", str(schedule_file(settings)),
    ))
    return 0


def cmd_flower(args: argparse.Namespace) -> int:
    """Flower, Celery's dashboard, on the same broker: every worker and its queues."""
    import ipaddress

    from shared.messaging.celery_app import make_celery

    settings = load_settings()
    _setup_logging(settings, "flower")
    if settings.flower_basic_auth:
        # Through the environment, not argv: the process list would show it.
        os.environ["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth
    elif not ipaddress.ip_address(settings.flower_address).is_loopback:
        print("Flower can stop workers: set FLOWS_CODE_ACTIONS_FLOWER_BASIC_AUTH before "
              f"listening on {settings.flower_address}", file=sys.stderr)
        return 2
    app = make_celery(settings)
    # Flower turns every worker's task events on while it runs (a broker message and its
    # confirm per task state, on each run's path); it follows TASK_EVENTS instead.
    return app.start(
        ["flower", f"--address={settings.flower_address}", f"--port={settings.flower_port}",
         f"--enable_events={settings.task_events}"]
    ) or 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Our migrations; on the Go service's database, its conversion (shared/adoption)."""
    from shared.adoption.migrate import run_migrate

    settings = load_settings()
    status = run_migrate(settings, str(REPO_ROOT / "alembic.ini"), args.revision, args.dry_run,
                         sys.stdout, sys.stderr)
    if status == 0 and not args.dry_run:
        from shared.codelibs.catalog import sync_listed

        # Languages whose image has a manifest (Python) are synced by their workers at start.
        sync_listed(settings)
    return status


def cmd_import_logs(args: argparse.Namespace) -> int:
    """The Go service's S3 logs (one object per line) into the log index; resumable."""
    from sqlalchemy import create_engine

    from shared.adoption.log_import import ImportAborted, LogImporter, LogImportOptions, s3_client

    settings = load_settings()
    options = LogImportOptions(
        bucket=args.bucket or settings.s3_bucket_name,
        prefix=settings.s3_prefix if args.prefix is None else args.prefix,
        since=args.since, until=args.until, page_size=args.page_size, readers=args.readers,
        restart=args.restart,
    )
    engine = create_engine(settings.sqlalchemy_url, pool_size=2)
    try:
        counts = LogImporter(engine, s3_client(settings, args.readers), options,
                             sys.stdout).run()
    except ImportAborted as exc:
        print(f"import-logs stopped: {exc}. Committed pages are kept: run it again to "
              "continue.", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 1 if counts.errors else 0


def cmd_import_mongo(args: argparse.Namespace) -> int:
    """The Go service's MongoDB-era collections into PostgreSQL; resumable."""
    from sqlalchemy import create_engine

    from shared.adoption.mongo_import import MongoImportAborted, MongoImporter

    # The old environment may still say DB_TYPE=mongodb: this is the command that fixes it.
    settings = load_settings(db_type="postgres")
    uri, name = args.mongo_uri or settings.mongo_db_uri, args.mongo_db or settings.mongo_db_name
    if not uri or not name:
        print("import-mongo needs --mongo-uri and --mongo-db (or FLOWS_CODE_ACTIONS_MONGO_DB_URI "
              "and FLOWS_CODE_ACTIONS_MONGO_DB_NAME)", file=sys.stderr)
        return 2
    import pymongo

    client: pymongo.MongoClient = pymongo.MongoClient(
        uri, tz_aware=True, serverSelectionTimeoutMS=10_000
    )
    engine = create_engine(settings.sqlalchemy_url, pool_size=2)
    try:
        results = MongoImporter(engine, client[name], sys.stdout, batch_size=args.batch_size,
                                restart=args.restart).run()
    except MongoImportAborted as exc:
        print(f"import-mongo stopped: {exc}. Committed batches are kept: run it again to "
              "continue.", file=sys.stderr)
        return 1
    finally:
        client.close()
        engine.dispose()
    return 1 if any(counts.errors for counts in results.values()) else 0


def cmd_images(args: argparse.Namespace) -> int:
    import docker

    from worker.images import ensure_images, remove_stale_images

    _setup_logging(load_settings(), "images", level="info")
    client = docker.from_env()
    from worker.images import available_languages

    defined = available_languages()
    tags = ensure_images(client, args.language or [lang for lang in LANGUAGES if lang in defined])
    for language, tag in tags.items():
        print(f"{language}: {tag}")
    if args.prune:
        for tag in remove_stale_images(client, tags.values()):
            print(f"removed stale {tag}")
    return 0


def cmd_standalone(args: argparse.Namespace) -> int:
    from codeactions.local.children import built_languages
    from codeactions.local.platform import EXTRAS, run_local_platform

    return run_local_platform(
        state_dir=Path(args.state_dir), base_port=args.base_port,
        languages=args.language or built_languages(),
        extras=tuple(extra for extra in EXTRAS if extra not in (args.without or [])),
        prune_images=not args.keep_images,
    )


def cmd_bench(args: argparse.Namespace) -> int:
    from codeactions.bench.runner import run_bench
    from codeactions.local.children import REPO_ROOT as CHECKOUT
    from codeactions.local.children import built_languages

    _setup_logging(load_settings(), "bench", level="warning")
    return run_bench(
        url=args.url, base_port=args.base_port, state_dir=Path(args.state_dir),
        languages=["python"] if args.logs_only else args.language or built_languages(),
        quick=args.quick, results_dir=CHECKOUT / "bench" / "results", logs_only=args.logs_only,
    )


def cmd_chaos(args: argparse.Namespace) -> int:
    from codeactions.chaos.runner import SCENARIOS, run_chaos
    from codeactions.local.children import REPO_ROOT as CHECKOUT

    unknown = set(args.scenario or []) - {s.name for s in SCENARIOS}
    if unknown:
        print(f"unknown scenario(s): {', '.join(sorted(unknown))}; choose from "
              + ", ".join(s.name for s in SCENARIOS), file=sys.stderr)
        return 2
    _setup_logging(load_settings(), "chaos", level="warning")
    return run_chaos(
        base_port=args.base_port, state_dir=Path(args.state_dir),
        languages=args.language or ["python", "javascript"], quick=args.quick,
        only=args.scenario, results_dir=CHECKOUT / "chaos" / "results",
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
    worker.add_argument("--metrics-port", type=int, default=None,
                        help="port of this worker's /metrics (0: none); default from settings")
    worker.set_defaults(func=cmd_worker)

    events = sub.add_parser("events", help="apply project and permission events (RabbitMQ)")
    events.set_defaults(func=cmd_events)

    beat = sub.add_parser("beat", help="periodic jobs: retention cleaner, stuck-run reaper")
    beat.set_defaults(func=cmd_beat)

    flower = sub.add_parser("flower", help="Flower, the Celery dashboard")
    flower.set_defaults(func=cmd_flower)

    migrate = sub.add_parser(
        "migrate", help="apply database migrations (converts the Go service's database)")
    migrate.add_argument("revision", nargs="?", default="head")
    migrate.add_argument("--dry-run", action="store_true",
                         help="print what would be done; change nothing")
    migrate.set_defaults(func=cmd_migrate)

    import_logs = sub.add_parser(
        "import-logs", help="import the Go service's S3 logs into the log index (resumable)")
    import_logs.add_argument("--bucket", help="default: FLOWS_CODE_ACTIONS_S3_BUCKET_NAME")
    import_logs.add_argument("--prefix", help="default: FLOWS_CODE_ACTIONS_S3_PREFIX")
    import_logs.add_argument("--since", type=_day, help="first day to import (YYYY-MM-DD)")
    import_logs.add_argument("--until", type=_day, help="last day to import (YYYY-MM-DD)")
    import_logs.add_argument("--page-size", type=int, default=1000,
                             help="objects listed and committed at a time")
    import_logs.add_argument("--readers", type=int, default=16,
                             help="objects read from S3 at once")
    import_logs.add_argument("--restart", action="store_true",
                             help="scan from the start again (nothing is imported twice)")
    import_logs.set_defaults(func=cmd_import_logs)

    import_mongo = sub.add_parser(
        "import-mongo", help="copy the Go service's MongoDB data into PostgreSQL (resumable)")
    import_mongo.add_argument("--mongo-uri", help="default: FLOWS_CODE_ACTIONS_MONGO_DB_URI")
    import_mongo.add_argument("--mongo-db", help="default: FLOWS_CODE_ACTIONS_MONGO_DB_NAME")
    import_mongo.add_argument("--batch-size", type=int, default=500)
    import_mongo.add_argument("--restart", action="store_true",
                              help="read every collection from the start again")
    import_mongo.set_defaults(func=cmd_import_mongo)

    images = sub.add_parser("images", help="build the engine images (cached by content)")
    images.add_argument("--language", action="append", choices=LANGUAGES)
    images.add_argument("--prune", action="store_true",
                        help="remove older engine images (only when no older worker runs)")
    images.set_defaults(func=cmd_images)

    standalone = sub.add_parser("standalone", help="the whole platform on this machine")
    standalone.add_argument("--state-dir", default=os.environ.get(
        "FLOWS_CODE_ACTIONS_STATE_DIR", ".state/dev"))
    standalone.add_argument("--base-port", type=int, default=15430)
    standalone.add_argument("--language", action="append", choices=LANGUAGES,
                            help="only these languages' workers (default: every built one)")
    standalone.add_argument("--without", action="append", choices=["beat", "flower", "events"],
                            help="leave out this part (default: all of them)")
    standalone.add_argument("--keep-images", action="store_true",
                            help="do not remove older engine images (another checkout's)")
    standalone.set_defaults(func=cmd_standalone)

    bench = sub.add_parser("bench", help="measure the fast path (starts its own platform)")
    bench.add_argument("--url", default=os.environ.get("BENCH_URL"),
                       help="measure this running platform instead of starting one")
    bench.add_argument("--base-port", type=int, default=16430)
    bench.add_argument("--state-dir", default=".state/bench")
    bench.add_argument("--language", action="append", choices=LANGUAGES)
    bench.add_argument("--quick", action="store_true", help="fewer calls: checks the bench")
    bench.add_argument("--logs-only", action="store_true",
                       help="only GET /codelog pages of a code with 100,000 logs")
    bench.set_defaults(func=cmd_bench)

    chaos = sub.add_parser("chaos", help="break the platform's parts under load and count "
                           "what happens to runs and callers (starts its own platform)")
    chaos.add_argument("--base-port", type=int, default=17430)
    chaos.add_argument("--state-dir", default=".state/chaos")
    chaos.add_argument("--language", action="append", choices=LANGUAGES,
                       help="languages under load (default: python and javascript)")
    chaos.add_argument("--scenario", action="append",
                       help="only this scenario (repeatable): worker-python, rabbitmq, "
                            "postgres, redis, dockerd, api-worker, api-master")
    chaos.add_argument("--quick", action="store_true",
                       help="3 worker kills and shorter waits: checks the harness")
    chaos.set_defaults(func=cmd_chaos)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValidationError as exc:  # settings: say what is wrong, not a traceback
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            print(f"codeactions {args.command}: {where + ': ' if where else ''}{message}",
                  file=sys.stderr)
        return 2


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a day (YYYY-MM-DD)") from None


if __name__ == "__main__":
    sys.exit(main())
