"""Waiting for a freshly started service to become usable."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from codeactions.local.services.errors import ServiceStartError
from codeactions.local.services.processes import ManagedProcess

LOOPBACK = "127.0.0.1"

_POLL_SECONDS = 0.2
_LOG_TAIL_BYTES = 3000


def port_accepts_connections(port: int, host: str = LOOPBACK, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until_healthy(
    is_healthy: Callable[[], bool],
    *,
    process: ManagedProcess,
    timeout: float,
    log_path: Path,
) -> None:
    """Poll `is_healthy` until it is true; fail early if `process` exits."""
    deadline = time.monotonic() + timeout
    while not is_healthy():
        if not process.is_running():
            raise ServiceStartError(
                f"{process.name} exited during start-up; end of {log_path}:\n{log_tail(log_path)}"
            )
        if time.monotonic() >= deadline:
            raise ServiceStartError(
                f"{process.name} not healthy after {timeout:.0f}s; end of {log_path}:\n"
                f"{log_tail(log_path)}"
            )
        time.sleep(_POLL_SECONDS)


def log_tail(log_path: Path) -> str:
    try:
        with log_path.open("rb") as log:
            log.seek(0, 2)
            log.seek(max(0, log.tell() - _LOG_TAIL_BYTES))
            return log.read().decode(errors="replace")
    except OSError as error:
        return f"(log unreadable: {error})"
