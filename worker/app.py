"""The worker's Celery app: the shared factory plus this side's tasks and resources."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from celery import Celery

from shared.messaging.celery_app import make_celery
from shared.settings import Settings

log = logging.getLogger(__name__)


class WorkerContext:
    """What a worker process holds: connections are made lazily, once per process."""

    def __init__(
        self,
        settings: Settings,
        worker_name: str,
        celery: Celery,
        languages: list[str] | None = None,
    ) -> None:
        self.settings = settings
        self.worker_name = worker_name
        self.celery = celery
        self.languages = list(languages or [])
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._executor = None
        self._callback_sender = None
        self._gate = None
        self._closers: list = []

    def executor(self):  # noqa: ANN201 - RunExecutor, imported lazily
        with self._lock:
            if self._executor is None or self._pid != os.getpid():
                self._executor = self._build()
                self._pid = os.getpid()
            return self._executor

    def callback_sender(self):  # noqa: ANN201 - CallbackSender, imported lazily
        from worker.callback_sender import CallbackSender

        db = self.executor().db  # one connection pool per process, shared with runs
        with self._lock:
            if self._callback_sender is None or self._callback_sender.db is not db:
                self._callback_sender = CallbackSender(self.settings, db)
            return self._callback_sender

    def project_gate(self):  # noqa: ANN201 - ProjectGate, imported lazily
        """The per-project cap, sharing the executor's connections (so, one per process)."""
        from worker.project_concurrency import ProjectGate

        executor = self.executor()
        with self._lock:
            if self._gate is None or self._gate.db is not executor.db:
                self._gate = ProjectGate(self.settings, executor.db, executor.redis)
            return self._gate

    def close(self) -> None:
        """The worker is stopping: remove its warm containers (pool and environments)."""
        with self._lock:
            closers, self._closers = self._closers, []
        for close in closers:
            try:
                close()
            except Exception:
                log.exception("closing the fast path failed")

    def _build(self):  # noqa: ANN202
        import docker
        import redis

        from shared.callbacks import delivery as callback_delivery
        from shared.codes.model import TIMEOUT_DEFAULT
        from shared.db import Database
        from shared.logs.archive import LogArchive
        from worker.images import engine_image_tag
        from worker.preparers.go_build import GoBuilder
        from worker.run_executor import RunExecutor
        from worker.sandbox.run_activity import RunActivity
        from worker.sandbox.sandbox import Sandbox, SandboxLimits
        from worker.warm.environments import WarmEnvironments
        from worker.warm.pool import ContainerReaper, WarmPool

        settings = self.settings
        client = (
            docker.DockerClient(base_url=settings.docker_host, timeout=30, max_pool_size=32)
            if settings.docker_host
            else docker.from_env(timeout=30, max_pool_size=32)
        )
        go_builder = GoBuilder(
            client,
            settings,
            Path(settings.go_build_cache or Path(settings.state_dir) / "go-build-cache"),
            labels={"codeactions.worker": self.worker_name},
        )
        activity = RunActivity()
        reaper = ContainerReaper(client.api, activity=activity)
        sandbox = Sandbox(client, settings, reaper=reaper, activity=activity)
        sandbox.pool = WarmPool(
            sandbox, self.worker_name, settings.warm_pool_size, settings.warm_pool_max_age
        )
        sandbox.environments = WarmEnvironments(sandbox, settings, self.worker_name)
        # Ready before the first run: the worker's own languages, networked (the default).
        default_limits = SandboxLimits.for_code(settings, TIMEOUT_DEFAULT, network=True)
        sandbox.firewall.start()
        sandbox.pool.start([(engine_image_tag(lang), default_limits) for lang in self.languages])
        self._closers = [sandbox.pool.close, sandbox.environments.close, reaper.close,
                         sandbox.firewall.stop]
        return RunExecutor(
            settings=settings,
            db=Database(settings),
            redis_client=redis.Redis.from_url(settings.redis, socket_timeout=5),
            archive=LogArchive(settings),
            sandbox=sandbox,
            worker_name=self.worker_name,
            preparers={"go": go_builder},
            on_callback=lambda run_id: callback_delivery.schedule(self.celery, run_id),
        )


def create_worker_app(
    settings: Settings, worker_name: str, languages: list[str] | None = None
) -> Celery:
    from celery.signals import worker_ready, worker_shutdown

    from worker import tasks

    app = make_celery(settings)
    context = WorkerContext(settings, worker_name, app, languages)
    app.conf.codeactions_context = context
    tasks.register(app)
    # Start the warm pool with the worker, not at its first run; empty it when it stops.
    worker_ready.connect(lambda **_: context.executor(), weak=False)
    worker_shutdown.connect(lambda **_: context.close(), weak=False)
    return app
