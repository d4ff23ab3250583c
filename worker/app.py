"""The worker's Celery app: the shared factory plus this side's tasks and resources."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from celery import Celery

from shared.celery_app import make_celery
from shared.settings import Settings

log = logging.getLogger(__name__)


class WorkerContext:
    """What a worker process holds: connections are made lazily, once per process."""

    def __init__(self, settings: Settings, worker_name: str, celery: Celery) -> None:
        self.settings = settings
        self.worker_name = worker_name
        self.celery = celery
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._executor = None
        self._callback_sender = None
        self._gate = None

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

    def _build(self):  # noqa: ANN202
        import docker
        import redis

        from shared.db import Database
        from shared.log_archive import LogArchive
        from shared.services import callback_delivery
        from worker.go_build import GoBuilder
        from worker.run_executor import RunExecutor
        from worker.sandbox import Sandbox

        settings = self.settings
        client = (
            docker.DockerClient(base_url=settings.docker_host, timeout=30)
            if settings.docker_host
            else docker.from_env(timeout=30)
        )
        go_builder = GoBuilder(
            client,
            settings,
            Path(settings.go_build_cache or Path(settings.state_dir) / "go-build-cache"),
            labels={"codeactions.worker": self.worker_name},
        )
        return RunExecutor(
            settings=settings,
            db=Database(settings),
            redis_client=redis.Redis.from_url(settings.redis, socket_timeout=5),
            archive=LogArchive(settings),
            sandbox=Sandbox(client, settings),
            worker_name=self.worker_name,
            preparers={"go": go_builder},
            on_callback=lambda run_id: callback_delivery.schedule(self.celery, run_id),
        )


def create_worker_app(settings: Settings, worker_name: str) -> Celery:
    from worker import tasks

    app = make_celery(settings)
    app.conf.codeactions_context = WorkerContext(settings, worker_name, app)
    tasks.register(app)
    return app
