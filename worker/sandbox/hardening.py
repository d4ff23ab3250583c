"""The one container policy for user code, shared by runs and Go compiles: nobody, no
capabilities, no new privileges, read-only root, no swap, no core dumps, private IPC, an init,
no output kept on the host, our own seccomp profile (seccomp.json: THREAT_MODEL.md says
what it refuses and why) and nothing of the host's kernel command line. Docker gives it no
network (not even its own set-up: that is the expensive part of a container); a networked
sandbox gets its link from the worker after start (worker/network/link.py). Callers choose
only the sizes and, for a networked sandbox, the read-only /etc files (resolvers, hosts) it
sees."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SANDBOX_USER = "65534:65534"
REMOVE_ATTEMPTS = 3
SECCOMP_FILE = Path(__file__).with_name("seccomp.json")
#: As the Docker CLI sends a profile file (compacted JSON); the API takes the text itself.
SECCOMP = json.dumps(json.loads(SECCOMP_FILE.read_text()), separators=(",", ":"))
#: Docker's default masked paths (what it sets when none are given) and the host's kernel
#: command line, which tells a run the host's boot options. Docker masks a file by mounting
#: /dev/null over it. `docker run` has no flag for this list: `run_flags` leaves Docker's.
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap", "/proc/cmdline",
)
#: The sandbox's own network namespace keeps no socket of a run past its end: no TIME_WAIT
#: (its 4-tuples and remote addresses would show in a later warm run's /proc/net/tcp for a
#: minute) and orphaned closing sockets go after a second. THREAT_MODEL.md, "Warm
#: environments".
SYSCTLS = {"net.ipv4.tcp_max_tw_buckets": "0", "net.ipv4.tcp_fin_timeout": "1"}


@dataclass(frozen=True)
class ContainerPolicy:
    """The sizes and /etc files of one hardened container; the rest of the policy is fixed.
    `init=False` only for a process that is a proper init itself (a warm environment's
    supervisor reaps every orphan and is PID 1 on purpose: see engines/PROTOCOL.md)."""

    memory_bytes: int
    pids: int
    tmpfs_options: str
    fsize_bytes: int
    nofile: int
    #: (host file, path inside) pairs mounted read-only: a networked sandbox's resolv.conf
    #: and hosts (Docker writes none for a container without network).
    etc_files: tuple[tuple[str, str], ...] = ()
    init: bool = True
    #: `uid:gid`; the worker gives each sandbox its own (worker/sandbox/uids.py).
    user: str = SANDBOX_USER

    def host_config(self, api: Any, **extra: Any) -> dict[str, Any]:
        """For `create_hardened` (the Docker API); `extra`: the operator's CPU knobs."""
        config: dict[str, Any] = api.create_host_config(
            read_only=True,
            tmpfs={"/tmp": self.tmpfs_options},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges", f"seccomp={SECCOMP}"],
            pids_limit=self.pids,
            mem_limit=self.memory_bytes,
            memswap_limit=self.memory_bytes,  # no swap: the limit is the limit
            ulimits=[
                {"Name": "fsize", "Soft": self.fsize_bytes, "Hard": self.fsize_bytes},
                {"Name": "nofile", "Soft": self.nofile, "Hard": self.nofile},
                {"Name": "core", "Soft": 0, "Hard": 0},
            ],
            network_mode="none",
            binds=[f"{host}:{inside}:ro" for host, inside in self.etc_files] or None,
            ipc_mode="private",
            sysctls=SYSCTLS,
            init=self.init,
            # Output is read over attach; nothing of it is kept on the host's disk.
            log_config={"type": "none", "config": {}},
            **extra,
        )
        config["MaskedPaths"] = list(MASKED_PATHS)  # docker-py has no argument for it
        return config

    def run_flags(self) -> list[str]:
        """The same container as `docker run` flags, for what starts an engine image by hand
        (the bench's cold baseline, the engine tests); tests/engines/test_hardening.py checks
        both give Docker the same container."""
        flags = [
            "--read-only", "--tmpfs", f"/tmp:{self.tmpfs_options}", "--user", self.user,
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--security-opt", f"seccomp={SECCOMP_FILE}",
            "--pids-limit", str(self.pids),
            "--memory", str(self.memory_bytes), "--memory-swap", str(self.memory_bytes),
            "--ulimit", f"fsize={self.fsize_bytes}", "--ulimit", f"nofile={self.nofile}",
            "--ulimit", "core=0",
            "--network", "none", "--ipc", "private", "--log-driver", "none",
        ]
        for name, value in SYSCTLS.items():
            flags += ["--sysctl", f"{name}={value}"]
        for host, inside in self.etc_files:
            flags += ["--volume", f"{host}:{inside}:ro"]
        return [*flags, "--init"] if self.init else flags


def create_hardened(
    api: Any,
    image: str,
    *,
    hostname: str,
    labels: dict[str, str],
    host_config: dict[str, Any],
    command: list[str] | None = None,
    user: str = SANDBOX_USER,
) -> str:
    """A container waiting for one job on stdin; labelled so leftovers can be found."""
    container = api.create_container(
        image,
        command=command,
        stdin_open=True,
        tty=False,
        user=user,
        environment={},
        hostname=hostname,
        labels={"codeactions.sandbox": "1", **labels},
        host_config=host_config,
        # No network set-up by Docker at all (no prestart hook re-exec, no resolver):
        # the worker attaches a networked sandbox's link itself.
        network_disabled=True,
    )
    return container["Id"]


def remove_quietly(api: Any, container_id: str) -> None:
    """Force-remove; already gone is fine, anything else is only logged. Tried again when
    the container stopped by itself while Docker was killing it ("Could not kill running
    container … is not running"), which a warm environment does when its stdin closes."""
    for attempt in range(REMOVE_ATTEMPTS):
        try:
            api.remove_container(container_id, force=True, v=True)
            return
        except Exception as exc:
            if "No such container" in str(exc) or "already in progress" in str(exc):
                return
            if attempt + 1 == REMOVE_ATTEMPTS:
                log.warning("could not remove container %s: %s", container_id[:12], exc)
                return
            time.sleep(0.1 * (attempt + 1))
