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
from codeactions.local.services.processes import ManagedProcess, pid_from_file, spawn
from codeactions.local.services.readiness import log_tail

logger = logging.getLogger(__name__)

_LOCAL_SOCKETS = ("unix:///var/run/docker.sock", "unix:///run/docker.sock")
_DEFAULT_PID_FILE = Path("/var/run/docker.pid")
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class DockerEngine:
    """The engine in use. `started` is True if we launched `process` (dockerd) ourselves,
    from `log_dir` and `dockerd_args` (kept to start it again)."""

    base_url: str | None
    started: bool
    process: ManagedProcess | None = None
    log_dir: Path | None = None
    dockerd_args: tuple[str, ...] = ()

    def is_running(self) -> bool:
        """Whether the dockerd we started still runs (reaps it if not)."""
        return self.process is not None and self.process.is_running()

    def start_again(self) -> None:
        """After our dockerd died: clear its remains and start it the same way."""
        if self.log_dir is None:
            raise ServiceStartError("this Docker engine was not started here")
        if self.process is not None:
            self.process.kill_remains()
            self.process = None
        remove_stale_pid_file(self.dockerd_args)
        again = ensure_docker_engine(self.log_dir, base_url=self.base_url,
                                     dockerd_args=self.dockerd_args)
        self.process = again.process

    def stop(self, grace_seconds: float = 30.0) -> None:
        """Stop dockerd if we started it; a pre-existing engine is left alone."""
        if self.process is not None:
            self.process.stop(signal.SIGTERM, grace_seconds)
            self.process = None


def private_engine_options(root: Path) -> tuple[str, tuple[str, ...]]:
    """(base URL, dockerd arguments) of a Docker engine of our own under `root`: its own
    socket, images, containers and containerd, and no networking of its own (sandboxes
    get their link from the worker), so it may be stopped and started without touching
    the machine's engine or anyone else's containers."""
    socket_path = root / "docker.sock"
    return f"unix://{socket_path}", (
        "--host", f"unix://{socket_path}",
        "--data-root", str(root / "data"),
        "--exec-root", str(root / "run"),
        "--pidfile", str(root / "dockerd.pid"),
        "--bridge", "none",
        "--iptables=false",
        "--ip-masq=false",
    )


def remove_stale_pid_file(dockerd_args: Sequence[str]) -> None:
    """dockerd refuses to start while the pid in its pid file exists, even as a zombie or
    as someone else's process by now: remove the file unless it names a live dockerd."""
    args = list(dockerd_args)
    path = Path(args[args.index("--pidfile") + 1]) if "--pidfile" in args else _DEFAULT_PID_FILE
    if path.exists() and pid_from_file(path, "dockerd") is None:
        logger.info("removing stale %s", path)
        path.unlink(missing_ok=True)


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
    remove_stale_pid_file(dockerd_args)
    log_path = log_dir / "dockerd.log"
    logger.info("no Docker engine answers; starting dockerd (log: %s)", log_path)
    command = [dockerd, *dockerd_args]
    if _without_bridge(dockerd_args):
        # Started with `--bridge none`, dockerd deletes the interface named docker0 (moby
        # removes the default bridge it will not use), which is the machine's engine's:
        # a network namespace of its own keeps it off the host's links.
        command = ["unshare", "--net", "--", *command]
    process = spawn(
        "dockerd",
        command,
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
    return DockerEngine(base_url=base_url, started=True, process=process, log_dir=log_dir,
                        dockerd_args=tuple(dockerd_args))


def _without_bridge(dockerd_args: Sequence[str]) -> bool:
    args = list(dockerd_args)
    pairs = zip(args, args[1:], strict=False)
    return any(flag == "--bridge" and value == "none" for flag, value in pairs)


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
