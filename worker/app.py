"""The worker's composition: its Celery tasks and what they run with, built from the process's
platform once, at start."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from celery import Celery

from shared.platform import Platform
from worker.callback_sender import CallbackSender
from worker.leases import RunLeases
from worker.project_concurrency import ProjectGate
from worker.run_executor import RunExecutor
from worker.upkeep import Upkeep
from worker.watchdog import ConsumptionWatchdog

log = logging.getLogger(__name__)


class WorkerRuntime:
    """What a worker process runs runs with: the executor (its sandbox, warm pool and
    environments), the callback sender, the per-project gate and the upkeep thread (leases,
    outbox, lost runs, leftovers, Docker's health). Built whole by `build`; `start` starts
    its threads (warm pool, firewall guard, upkeep) and `stop` removes its containers."""

    def __init__(
        self,
        executor: RunExecutor,
        callback_sender: CallbackSender,
        project_gate: ProjectGate,
        upkeep: Upkeep,
        languages: list[str],
    ) -> None:
        self.executor = executor
        self.callback_sender = callback_sender
        self.project_gate = project_gate
        self.upkeep = upkeep
        self.languages = languages
        self._started = threading.Event()

    @classmethod
    def build(
        cls, platform: Platform, worker_name: str, languages: list[str], concurrency: int
    ) -> WorkerRuntime:
        import docker

        from shared.messaging.queue_depth import QueueDepth
        from worker.preparation import sweep_leftovers
        from worker.preparers.go_build import GoBuilder
        from worker.sandbox.run_activity import RunActivity
        from worker.sandbox.sandbox import Sandbox
        from worker.warm.environments import WarmEnvironments
        from worker.warm.pool import ContainerReaper, WarmPool

        settings = platform.settings
        client = (
            docker.DockerClient(base_url=settings.docker_host, timeout=30, max_pool_size=32)
            if settings.docker_host
            else docker.from_env(timeout=30, max_pool_size=32)
        )
        go_builder = GoBuilder(
            client,
            settings,
            Path(settings.go_build_cache or Path(settings.state_dir) / "go-build-cache"),
            labels={"codeactions.worker": worker_name},
        )
        activity = RunActivity()
        sandbox = Sandbox(
            client, settings, reaper=ContainerReaper(client.api, activity=activity),
            activity=activity,
            pool=lambda sandbox: WarmPool(
                sandbox, worker_name, settings.warm_pool_size, settings.warm_pool_max_age
            ),
            environments=lambda sandbox: WarmEnvironments(sandbox, settings, worker_name),
        )
        leases = RunLeases()
        executor = RunExecutor(
            platform, sandbox, worker_name, preparers={"go": go_builder}, leases=leases
        )
        depth = QueueDepth(platform.celery, cache_seconds=1.0)
        watchdog = ConsumptionWatchdog(
            ready_messages=lambda: sum(depth.ready_messages(lang) for lang in languages),
            concurrency=concurrency,
        )
        watchdog.connect(platform.celery)
        upkeep = Upkeep(platform, leases, ping_docker=client.ping,
                        sweep_leftovers=lambda: sweep_leftovers(client, worker_name),
                        watchdog=watchdog)
        return cls(
            executor=executor,
            callback_sender=CallbackSender(settings, platform.db),
            project_gate=ProjectGate(settings, platform.db, platform.redis),
            upkeep=upkeep,
            languages=languages,
        )

    def start(self) -> None:
        """Ready before the first run: the worker's own languages, networked (the default)."""
        from shared.codes.model import TIMEOUT_DEFAULT
        from worker.images import engine_image_tag
        from worker.sandbox.sandbox import SandboxLimits

        sandbox = self.executor.sandbox
        limits = SandboxLimits.for_code(self.executor.settings, TIMEOUT_DEFAULT, network=True)
        sandbox.firewall.start()
        if sandbox.pool is not None:
            sandbox.pool.start([(engine_image_tag(lang), limits) for lang in self.languages])
        self.upkeep.start()
        self._started.set()

    def stop(self) -> None:
        """The worker is stopping: remove its warm containers (pool and environments)."""
        sandbox = self.executor.sandbox
        closers = [self.upkeep.stop, sandbox.firewall.stop]
        if sandbox.pool is not None:
            closers.insert(0, sandbox.pool.close)
        if sandbox.environments is not None:
            closers.insert(1, sandbox.environments.close)
        if sandbox.reaper is not None:
            closers.append(sandbox.reaper.close)
        for close in closers:
            try:
                close()
            except Exception:
                log.exception("stopping the worker's runtime failed")


def create_worker_app(
    platform: Platform, worker_name: str, languages: list[str], concurrency: int
) -> Celery:
    """The platform's Celery app with the worker's tasks, the runtime they use, and the
    heartbeat that tells /health this worker (and its Docker) is alive."""
    from celery.signals import worker_ready, worker_shutdown

    from worker import tasks
    from worker.heartbeat import Heartbeat

    runtime = WorkerRuntime.build(platform, worker_name, languages, concurrency)
    tasks.register(platform.celery, runtime)
    Heartbeat(platform.settings, platform.redis, worker_name, languages, concurrency,
              docker_ok=lambda: runtime.upkeep.docker_ok).connect(platform.celery)
    # The warm pool starts with the worker, not at its first run; it is emptied at the end.
    worker_ready.connect(lambda **_: runtime.start(), weak=False)
    worker_shutdown.connect(lambda **_: runtime.stop(), weak=False)
    return platform.celery
