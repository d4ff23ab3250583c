"""Common life cycle of one local server process: adopt, clean up, start, wait, stop."""

from __future__ import annotations

import logging
import pwd
import signal
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from codeactions.local.services.errors import PortInUseError
from codeactions.local.services.processes import (
    ManagedProcess,
    describe,
    is_alive,
    listening_pids,
    processes_with_marker,
    spawn,
)
from codeactions.local.services.readiness import port_accepts_connections, wait_until_healthy

logger = logging.getLogger(__name__)


class LocalServer(ABC):
    """A server we run as a child process on 127.0.0.1:`port`, with state in `state_dir`.

    `start()` is idempotent: a healthy server left running by an earlier (crashed) run with
    the same state directory is adopted; an unhealthy one is killed and replaced.
    """

    name: ClassVar[str]
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    start_timeout_seconds: ClassVar[float] = 60.0
    stop_grace_seconds: ClassVar[float] = 20.0

    def __init__(self, state_dir: Path, port: int) -> None:
        self.state_dir = state_dir.absolute()
        self.port = port
        self._process: ManagedProcess | None = None

    @property
    @abstractmethod
    def url(self) -> str:
        """How clients reach the server."""

    @abstractmethod
    def is_healthy(self) -> bool:
        """True if our server answers on the port."""

    @abstractmethod
    def _command(self) -> list[str]:
        """argv of the server process."""

    def _prepare(self) -> None:
        """Install binaries, create accounts and directories. Runs before every start."""
        return None

    def _extra_env(self) -> dict[str, str]:
        return {}

    def _run_as(self) -> pwd.struct_passwd | None:
        return None

    def _working_dir(self) -> Path | None:
        return None

    def _after_start(self) -> None:
        """One-off set-up once the server is healthy (create a database, ...)."""
        return None

    def _after_stop(self) -> None:
        """Clean-up once the server process is gone."""
        return None

    @property
    def log_path(self) -> Path:
        return self.state_dir / "logs" / f"{self.name}.log"

    @property
    def marker(self) -> str:
        return f"{self.state_dir}#{self.name}"

    @property
    def process(self) -> ManagedProcess | None:
        return self._process

    def is_running(self) -> bool:
        return self._process is not None and self._process.is_running()

    def start(self) -> str:
        """Make sure the server runs and is healthy; return its URL."""
        if self.is_running() and self.is_healthy():
            return self.url
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        if not self._adopt_leftover():
            self._spawn_and_wait()
        self._after_start()
        return self.url

    def stop(self) -> None:
        """Stop the server process if we started or adopted it."""
        if self._process is not None:
            self._process.stop(self.stop_signal, self.stop_grace_seconds)
            self._process = None
        self._after_stop()

    def _find_leftovers(self) -> set[int]:
        """Processes of ours still alive from an earlier run with this state directory."""
        return set(processes_with_marker(self.marker))

    def _adopt_leftover(self) -> bool:
        leftovers = self._find_leftovers()
        if self._process is not None and self._process.is_running():
            leftovers.add(self._process.pid)
        serving = listening_pids(self.port) & leftovers
        if serving and self.is_healthy():
            if self._process is None or not self._process.is_running():
                self._process = ManagedProcess.adopt(self.name, min(serving))
                logger.info("reusing running %s (pid %d)", self.name, self._process.pid)
            return True
        if self._process is not None:
            self._process.stop(signal.SIGTERM, 10.0)
            self._process = None
        for pid in sorted(leftovers):
            if is_alive(pid):
                logger.warning("stopping stale %s: %s", self.name, describe(pid))
                ManagedProcess.adopt(self.name, pid).stop(signal.SIGTERM, 10.0)
        self._ensure_port_free()
        return False

    def _ensure_port_free(self) -> None:
        holders = listening_pids(self.port)
        if holders or port_accepts_connections(self.port):
            who = ", ".join(describe(pid) for pid in sorted(holders)) or "an unknown process"
            raise PortInUseError(
                f"port {self.port} wanted for {self.name} is in use by {who}; "
                "stop it or choose another base port"
            )

    def _spawn_and_wait(self) -> None:
        process = spawn(
            self.name,
            self._command(),
            log_path=self.log_path,
            marker=self.marker,
            extra_env=self._extra_env(),
            cwd=self._working_dir(),
            run_as=self._run_as(),
        )
        self._process = process
        try:
            wait_until_healthy(
                self.is_healthy,
                process=process,
                timeout=self.start_timeout_seconds,
                log_path=self.log_path,
            )
        except BaseException:
            process.stop(signal.SIGKILL, 5.0)
            self._process = None
            raise
        logger.info("%s is ready at %s", self.name, self.url)
