"""The whole local platform back end: PostgreSQL, Redis, RabbitMQ, S3 and a Docker engine."""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self, TypeVar

from codeactions.local.services.docker_engine import DockerEngine, ensure_docker_engine
from codeactions.local.services.errors import LocalServiceError, StateDirBusyError
from codeactions.local.services.postgres import PostgresServer
from codeactions.local.services.rabbitmq import RabbitMQServer
from codeactions.local.services.redis import RedisServer
from codeactions.local.services.s3 import S3Server
from codeactions.local.services.server import LocalServer

logger = logging.getLogger(__name__)

ServerT = TypeVar("ServerT", bound=LocalServer)

# Service key -> environment variable the platform reads its URL from.
SERVICE_ENVIRONMENT: dict[str, str] = {
    "postgres": "FLOWS_CODE_ACTIONS_DB_URI",
    "redis": "FLOWS_CODE_ACTIONS_REDIS",
    "rabbitmq": "FLOWS_CODE_ACTIONS_RABBITMQ_URL",
    "s3": "FLOWS_CODE_ACTIONS_S3_ENDPOINT",
}
PORT_OFFSETS: dict[str, int] = {"postgres": 0, "redis": 1, "rabbitmq": 2, "s3": 3}


def overrides_from_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Service URLs already configured in the environment (those services are not started)."""
    environ = os.environ if environ is None else environ
    return {
        service: environ[variable]
        for service, variable in SERVICE_ENVIRONMENT.items()
        if environ.get(variable)
    }


@dataclass(frozen=True)
class StackUrls:
    postgres: str
    redis: str
    rabbitmq: str
    s3: str
    docker_started: bool

    def as_environment(self) -> dict[str, str]:
        """The URLs under the platform's FLOWS_CODE_ACTIONS_* variable names."""
        return {
            variable: getattr(self, service) for service, variable in SERVICE_ENVIRONMENT.items()
        }


class LocalStack:
    """Starts (or reuses) every service not given in `overrides`; stops what it started.

    Ports: `base_port` + 0 postgres, +1 redis, +2 rabbitmq (AMQP), +3 s3. RabbitMQ also
    uses AMQP port + 100 (distribution) and + 101 (its private epmd): below the kernel's
    ephemeral range (32768+) for the bases we use, so no outgoing connection can hold them.
    Keys of `overrides`: "postgres", "redis", "rabbitmq", "s3" (a URL) and "docker" (any
    value: do not check or start a Docker engine). dockerd, if started here, is left running
    by `stop()` unless `stop_docker` is true.
    """

    def __init__(
        self,
        state_dir: Path,
        base_port: int,
        overrides: Mapping[str, str] | None = None,
        *,
        stop_docker: bool = False,
    ) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.base_port = base_port
        self.overrides = dict(overrides or {})
        unknown = set(self.overrides) - {*SERVICE_ENVIRONMENT, "docker"}
        if unknown:
            raise ValueError(f"unknown service overrides: {sorted(unknown)}")
        self.stop_docker = stop_docker
        self.postgres = self._unless_overridden("postgres", PostgresServer)
        self.redis = self._unless_overridden("redis", RedisServer)
        self.rabbitmq = self._unless_overridden("rabbitmq", RabbitMQServer)
        self.s3 = self._unless_overridden("s3", S3Server)
        self.docker: DockerEngine | None = None
        self._urls: StackUrls | None = None
        self._lock_file: IO[str] | None = None

    def _unless_overridden(self, service: str, server: type[ServerT]) -> ServerT | None:
        if service in self.overrides:
            return None
        return server(self.state_dir, self.base_port + PORT_OFFSETS[service])

    @property
    def servers(self) -> list[LocalServer]:
        """Our servers in start order (stopped in reverse)."""
        candidates = [self.postgres, self.redis, self.rabbitmq, self.s3]
        return [server for server in candidates if server is not None]

    @property
    def urls(self) -> StackUrls:
        if self._urls is None:
            raise LocalServiceError("LocalStack.start() has not been called")
        return self._urls

    def start(self) -> StackUrls:
        self._lock_state_dir()
        try:
            if "docker" not in self.overrides:
                self.docker = ensure_docker_engine(self.state_dir / "logs")
            with ThreadPoolExecutor(max_workers=len(self.servers) or 1) as pool:
                futures = [pool.submit(server.start) for server in self.servers]
                for future in futures:
                    future.result()
        except BaseException:
            self.stop()
            raise
        self._urls = StackUrls(
            postgres=self._url_of("postgres", self.postgres),
            redis=self._url_of("redis", self.redis),
            rabbitmq=self._url_of("rabbitmq", self.rabbitmq),
            s3=self._url_of("s3", self.s3),
            docker_started=self.docker is not None and self.docker.started,
        )
        return self._urls

    def _url_of(self, service: str, server: LocalServer | None) -> str:
        return server.url if server is not None else self.overrides[service]

    def stop(self) -> None:
        """Stop every process started or adopted, in reverse start order."""
        for server in reversed(self.servers):
            try:
                server.stop()
            except Exception:
                logger.exception("failed to stop %s", server.name)
        if self.stop_docker and self.docker is not None:
            self.docker.stop()
        self._urls = None
        self._unlock_state_dir()

    def _lock_state_dir(self) -> None:
        if self._lock_file is not None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        lock_file = (self.state_dir / "stack.lock").open("a+")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            owner = lock_file.read().strip() or "another process"
            lock_file.close()
            raise StateDirBusyError(
                f"{self.state_dir} is in use by a running LocalStack (pid {owner})"
            ) from None
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(str(os.getpid()))
        lock_file.flush()
        self._lock_file = lock_file

    def _unlock_state_dir(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
