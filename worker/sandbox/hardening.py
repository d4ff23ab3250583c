"""The one container policy for user code, shared by runs and Go compiles: nobody, no
capabilities, no new privileges, read-only root, no swap, no core dumps, private IPC, an init
the run cannot read or attach to, no output kept on the host, our own seccomp profile
(seccomp.json: THREAT_MODEL.md says what it refuses and why) and nothing of the host's
kernel command line. Docker gives it no network (not even its own set-up: that is the
expensive part of a container); a networked sandbox gets its link from the worker after
start (worker/network/link.py). Callers choose only the sizes and, for a networked sandbox,
the read-only /etc files (resolvers, hosts) it sees."""

from __future__ import annotations

import functools
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
#: PID 1 of a container without a supervisor of its own (one run, a pool container, a Go
#: compile): tini, which each engine image installs root-owned and execute-only (0711). The
#: kernel makes a process undumpable when it executes a file its user cannot read (fs/exec.c,
#: would_dump; fs.suid_dumpable is 0 by default), so the run, under the same uid, can neither
#: attach to it nor read its /proc/1/environ, fd or mem. Docker's own `--init` bind-mounts
#: the host's tini, which is readable, so the run could. THREAT_MODEL.md, "PID 1".
INIT = "/opt/codeactions/init"
#: The sandbox's own network namespace keeps no socket of a run past its end: no TIME_WAIT
#: (its 4-tuples and remote addresses would show in a later warm run's /proc/net/tcp for a
#: minute) and orphaned closing sockets go after a second. THREAT_MODEL.md, "Warm
#: environments".
SYSCTLS = {"net.ipv4.tcp_max_tw_buckets": "0", "net.ipv4.tcp_fin_timeout": "1"}


@dataclass(frozen=True)
class ContainerPolicy:
    """The sizes and /etc files of one hardened container; the rest of the policy is fixed.
    `init=False` only for a process that is a proper init itself (a warm environment's
    supervisor reaps every orphan and is PID 1 on purpose: see engines/PROTOCOL.md); with
    `init`, PID 1 is `INIT` in front of the image's own entrypoint."""

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
            # Never Docker's init (nor a daemon-wide `"init": true`): ours is in the
            # entrypoint (`entrypoint`).
            init=False,
            # Output is read over attach; nothing of it is kept on the host's disk.
            log_config={"type": "none", "config": {}},
            **extra,
        )
        config["MaskedPaths"] = list(MASKED_PATHS)  # docker-py has no argument for it
        return config

    def entrypoint(self, api: Any, image: str) -> list[str] | None:
        """For `create_hardened`: `INIT` in front of the image's entrypoint, or the image's."""
        return [INIT, "--", *image_entrypoint(api, image)] if self.init else None

    def init_args(self, image_entrypoint: list[str]) -> list[str]:
        """What follows the image in `docker run` after `run_flags()`: with `init`, the
        image's own entrypoint (those flags made `INIT` the entrypoint); else nothing."""
        return ["--", *image_entrypoint] if self.init else []

    def run_flags(self) -> list[str]:
        """The same container as `docker run` flags, for what starts an engine image by hand
        (the bench's cold baseline, the engine tests); tests/engines/test_hardening.py checks
        both give Docker the same container. With `init`, the image's entrypoint goes after
        the image: `docker run <flags> <image> <init_args(entrypoint)>`."""
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
        flags.append("--init=false")
        return [*flags, "--entrypoint", INIT] if self.init else flags


@functools.lru_cache(maxsize=64)
def image_entrypoint(api: Any, image: str) -> tuple[str, ...]:
    """The image's own ENTRYPOINT, asked once per process: our tags are content hashes, so
    it does not change under a tag."""
    return tuple(api.inspect_image(image)["Config"]["Entrypoint"] or ())


def create_hardened(
    api: Any,
    image: str,
    *,
    hostname: str,
    labels: dict[str, str],
    host_config: dict[str, Any],
    command: list[str] | None = None,
    user: str = SANDBOX_USER,
    entrypoint: list[str] | None = None,
) -> str:
    """A container waiting for one job on stdin; labelled so leftovers can be found.
    `entrypoint`: `ContainerPolicy.entrypoint` (None: the image's)."""
    container = api.create_container(
        image,
        command=command,
        entrypoint=entrypoint,
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
