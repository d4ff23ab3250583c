"""A working Docker engine: use the one configured, else install and start dockerd.

dockerd is machine-level: once started here it is left running unless the caller stops it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from codeactions.local.services.apt import apt_install
from codeactions.local.services.errors import ServiceStartError
from codeactions.local.services.processes import ManagedProcess, spawn
from codeactions.local.services.readiness import log_tail

logger = logging.getLogger(__name__)

_LOCAL_SOCKETS = ("unix:///var/run/docker.sock", "unix:///run/docker.sock")
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class DockerEngine:
    """The engine in use. `started` is True if we launched `process` (dockerd) ourselves."""

    base_url: str | None
    started: bool
    process: ManagedProcess | None = None

    def stop(self, grace_seconds: float = 30.0) -> None:
        """Stop dockerd if we started it; a pre-existing engine is left alone."""
        if self.process is not None:
            self.process.stop(signal.SIGTERM, grace_seconds)
            self.process = None


def docker_engine_answers(base_url: str | None = None) -> bool:
    """True if the engine at `base_url` (default: DOCKER_HOST or the local socket) pings."""
    import docker  # imported lazily: docker-py pulls in requests and more
    from docker.errors import DockerException

    try:
        if base_url:
            client = docker.DockerClient(base_url=base_url, timeout=5)
        else:
            client = docker.from_env(timeout=5)
    except DockerException:
        return False
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - any failure (socket, HTTP, API) means "not usable"
        return False
    finally:
        client.close()


def ensure_docker_engine(
    log_dir: Path,
    *,
    base_url: str | None = None,
    dockerd_args: Sequence[str] = (),
    timeout_seconds: float = 60.0,
) -> DockerEngine:
    """Return a pinging engine, installing docker.io and starting dockerd if needed.

    `base_url` and `dockerd_args` select a non-default engine (e.g. a private socket).
    """
    if docker_engine_answers(base_url):
        return DockerEngine(base_url=base_url, started=False)
    configured = os.environ.get("DOCKER_HOST", "")
    if base_url is None and configured not in ("", *_LOCAL_SOCKETS):
        raise ServiceStartError(
            f"DOCKER_HOST={configured} does not answer; a local dockerd would not serve it"
        )
    dockerd = _ensure_docker_installed()
    log_path = log_dir / "dockerd.log"
    logger.info("no Docker engine answers; starting dockerd (log: %s)", log_path)
    process = spawn(
        "dockerd",
        [dockerd, *dockerd_args],
        log_path=log_path,
        marker=f"{log_dir.absolute()}#dockerd",
        extra_env={"PATH": f"{os.environ.get('PATH', '')}:{_SYSTEM_PATH}"},  # iptables
    )
    deadline = time.monotonic() + timeout_seconds
    while not docker_engine_answers(base_url):
        if not process.is_running() or time.monotonic() >= deadline:
            process.stop(signal.SIGTERM, 10.0)
            raise ServiceStartError(
                f"dockerd did not come up; end of {log_path}:\n{log_tail(log_path)}"
            )
        time.sleep(0.5)
    logger.info("dockerd is ready (pid %d)", process.pid)
    return DockerEngine(base_url=base_url, started=True, process=process)


def _ensure_docker_installed() -> str:
    if _which("iptables") is None:
        apt_install("iptables")
    dockerd = _which("dockerd")
    if dockerd is None:
        apt_install("docker.io")
        dockerd = _which("dockerd")
    if dockerd is None:
        raise ServiceStartError("dockerd is still missing after installing docker.io")
    return dockerd


def _which(program: str) -> str | None:
    return shutil.which(program) or shutil.which(program, path=_SYSTEM_PATH)
