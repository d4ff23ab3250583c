"""Run one job in one fresh, hardened container and collect its frames.

The container gets the job on stdin and nothing else: no credentials in its environment,
files or network reach. It runs as a host uid of its own (worker/sandbox/uids.py), with
every capability dropped, a read-only root, a small tmpfs, memory/pids/file-size limits,
and is killed at the code's timeout or as soon as its output passes the cap. It is always
removed afterwards.

Fast path: with a `WarmPool` the container was started ahead of demand and waits for its one
job (an empty pool falls back to starting one here); with `WarmEnvironments`, a code marked
warm runs as a fresh process in a container bound to that code (worker/warm/environment.py).
The run is over at the engine's `end` frame: removing the container happens off the
request's path when a `ContainerReaper` is given.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.logs.model import LOG_CONTENT_MAX, LOG_TYPES
from shared.runs.statuses import ExitReason, RunStatus
from shared.settings import Settings
from worker.network.firewall import FirewallGuard, etc_files
from worker.network.link import SandboxLink
from worker.sandbox.hardening import ContainerPolicy, create_hardened, remove_quietly
from worker.sandbox.run_activity import RunActivity
from worker.sandbox.uids import SandboxUids
from worker.wire.attach_stream import (
    STDERR,
    AttachedContainer,
    StreamStopped,
    StreamTimeout,
    StreamTooLarge,
    final_state,
)
from worker.wire.frames import FrameDecoder, FrameError, FrameTooLarge

if TYPE_CHECKING:
    from worker.warm.environments import WarmEnvironments, WarmSpec
    from worker.warm.pool import ContainerReaper, WarmPool

log = logging.getLogger(__name__)

CONTENT_TYPES = ("text", "json", "html")
STDERR_KEEP = 4096


def parse_size(value: str) -> int:
    """Docker-style sizes: `256m`, `1g`, `65536` (bytes)."""
    value = value.strip().lower()
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    if value and value[-1] in units:
        return int(float(value[:-1]) * units[value[-1]])
    return int(value)


@dataclass
class SandboxLimits:
    timeout: float
    memory_bytes: int
    pids: int
    tmpfs_size: str
    output_bytes: int
    max_logs: int
    cpu_quota: int | None = None
    cpu_shares: int | None = None
    memory_reservation: int | None = None
    network: bool = True

    @classmethod
    def for_code(cls, settings: Settings, timeout: int, network: bool = True) -> SandboxLimits:
        limits = cls(
            timeout=float(timeout),
            memory_bytes=parse_size(settings.sandbox_default_memory),
            pids=settings.sandbox_pids_limit,
            tmpfs_size=settings.sandbox_tmpfs_size,
            output_bytes=settings.sandbox_output_max_bytes,
            max_logs=settings.sandbox_max_logs,
            network=network,
        )
        if settings.resource_enabled:  # the seed's knobs, when the operator turns them on
            limits.memory_bytes = parse_size(settings.memory_limit)
            limits.memory_reservation = parse_size(settings.memory_reservation)
            limits.cpu_quota = settings.cpu_quota
            limits.cpu_shares = settings.cpu_shares
        return limits


@dataclass
class SandboxOutcome:
    status: str  # a RunStatus: completed | failed
    result: str = ""
    status_code: int = 200
    content_type: str = "text"
    logs: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    exit_reason: str = ExitReason.COMPLETED
    container_id: str = ""
    stdout: str = ""
    startup_seconds: float = 0.0  # container create + start + job handed over
    #: The engine sent a result before a failed end: a legacy code that failed after setting
    #: it (engines/PROTOCOL.md, "Legacy mode"); the executor honours it for legacy codes only.
    answered: bool = False


def clean_text(value: object, limit: int | None = None) -> str:
    """PostgreSQL text cannot hold NUL; user output may. Replace it, then cut."""
    text = str(value).replace("\x00", "\ufffd")
    # Lone surrogates (from JSON escapes) cannot be stored as UTF-8 either.
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text if limit is None else text[:limit]


#: How a run that died while writing a frame is reported (before why it stopped).
TORN_FRAME = "the run's process died in the middle of a frame"
#: Beyond a run's output cap, what its frames' JSON may add on the output stream.
OUTPUT_SLACK = 64 * 1024


class FrameCollector:
    """Turns frames into an outcome, enforcing our own caps whatever the engine claims."""

    def __init__(self, limits: SandboxLimits) -> None:
        self.limits = limits
        self.outcome = SandboxOutcome(status=RunStatus.FAILED, exit_reason=ExitReason.NO_END_FRAME)
        self.ended = False
        self.has_result = False
        self.violation: tuple[str, str] | None = None
        #: The output ended inside a frame: the engine's process died while writing it.
        self.torn = False

    @property
    def stream_limit(self) -> int:
        """Bytes a run may write on its output stream: its output cap plus room for the
        frames' own JSON."""
        return self.limits.output_bytes + OUTPUT_SLACK

    @property
    def too_much(self) -> tuple[str, str]:
        """The exit reason and error of a run whose stream passed `stream_limit`."""
        limit = human_size(self.limits.output_bytes)
        return ExitReason.OUTPUT_LIMIT, f"output limit exceeded ({limit})"

    def take(self, frame: dict[str, Any]) -> None:
        kind = frame.get("t")
        if kind == "log":
            if len(self.outcome.logs) >= self.limits.max_logs:
                self.violation = (
                    ExitReason.LOG_LIMIT,
                    f"log limit exceeded ({self.limits.max_logs} logs per run)",
                )
                return
            level = frame.get("level")
            self.outcome.logs.append(
                {
                    "type": level if level in LOG_TYPES else "info",
                    "content": clean_text(frame.get("content", ""), LOG_CONTENT_MAX),
                    "at": time.time(),
                }
            )
        elif kind == "result":
            self.has_result = True
            content_type = frame.get("content_type")
            status_code = frame.get("status_code", 200)
            valid_code = isinstance(status_code, int) and 200 <= status_code <= 599
            self.outcome.result = clean_text(frame.get("value", ""))
            self.outcome.status_code = status_code if valid_code else 200
            self.outcome.content_type = content_type if content_type in CONTENT_TYPES else "text"
        elif kind == "stdout":
            self.outcome.stdout = clean_text(frame.get("data", ""), 65536)
            total = frame.get("total")
            if isinstance(total, int) and total > self.limits.output_bytes:
                self.violation = (
                    "output_limit",
                    f"output limit exceeded ({human_size(self.limits.output_bytes)} printed)",
                )
            elif isinstance(total, int) and total > len(self.outcome.stdout.encode()):
                self.outcome.stdout += f"\n[… {total} bytes printed in all; the rest was cut]"
        elif kind == "end":
            self.ended = True
            if frame.get("status") == "completed":
                self.outcome.status = RunStatus.COMPLETED
                self.outcome.exit_reason = ExitReason.COMPLETED
            else:
                self.outcome.status, self.outcome.exit_reason = RunStatus.FAILED, ExitReason.ERROR
                self.outcome.error = clean_text(frame.get("error", ""), LOG_CONTENT_MAX)
                self.outcome.answered = self.has_result


@dataclass
class LaunchedContainer:
    """A started container with its attach stream open (opened before start: no output is
    missed), waiting for a job on stdin."""

    id: str
    attached: AttachedContainer
    created: float = field(default_factory=time.monotonic)


class NotStarted(Exception):
    """No container could be had for the run (Docker away, image missing): its code never
    got its job, so trying again cannot run it twice."""


class Sandbox:
    def __init__(
        self,
        client: Any,
        settings: Settings,
        reaper: ContainerReaper | None = None,
        activity: RunActivity | None = None,
        pool: Callable[[Sandbox], WarmPool] | None = None,
        environments: Callable[[Sandbox], WarmEnvironments] | None = None,
    ) -> None:
        """`pool` and `environments` make the fast paths from this sandbox (they start
        containers through it); without them every run starts its own container."""
        self.client = client  # docker.DockerClient
        self.settings = settings
        self.reaper = reaper
        # Runs in flight (the executor marks them): pool refills and container removals
        # wait for a quiet moment.
        self.activity = activity or RunActivity()
        # Checked on the spot when stale; a worker also keeps it checked in the background.
        self.firewall = FirewallGuard(settings)
        self.pool: WarmPool | None = pool(self) if pool else None
        self.environments: WarmEnvironments | None = environments(self) if environments else None

    @functools.cached_property
    def link(self) -> SandboxLink:
        """Plugs networked sandboxes in (the firewall they pass: `self.firewall`)."""
        return SandboxLink(self.settings.sandbox_subnet)

    @functools.cached_property
    def uids(self) -> SandboxUids:
        """Each sandbox's own host uid."""
        return SandboxUids(self.settings)

    def policy(
        self, limits: SandboxLimits, init: bool = True, user: str | None = None
    ) -> ContainerPolicy:
        """The container a run with these limits gets (without the operator's CPU knobs);
        `.run_flags()` spells it for `docker run`. `user`: its uid:gid (else a fresh one)."""
        return ContainerPolicy(
            memory_bytes=limits.memory_bytes,
            pids=limits.pids,
            tmpfs_options=f"rw,nosuid,nodev,size={limits.tmpfs_size},mode=1777",
            fsize_bytes=16 * 1024 * 1024,
            nofile=256,
            etc_files=tuple(etc_files(self.settings).items()) if limits.network else (),
            init=init,
            user=user or self.uids.next(),
        )

    def host_config(self, limits: SandboxLimits, policy: ContainerPolicy) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if limits.cpu_quota:
            extra.update(cpu_period=100_000, cpu_quota=limits.cpu_quota)
        if limits.cpu_shares:
            extra["cpu_shares"] = limits.cpu_shares
        if limits.memory_reservation:
            extra["mem_reservation"] = min(limits.memory_reservation, limits.memory_bytes)
        return policy.host_config(self.client.api, **extra)

    def create(
        self,
        image: str,
        limits: SandboxLimits,
        labels: dict[str, str],
        command: list[str] | None = None,
        init: bool = True,
    ) -> str:
        policy = self.policy(limits, init)
        return create_hardened(
            self.client.api,
            image,
            hostname="sandbox",
            labels=labels,
            host_config=self.host_config(limits, policy),
            command=command,
            user=policy.user,
            entrypoint=policy.entrypoint(self.client.api, image),
        )

    def launch(
        self,
        image: str,
        limits: SandboxLimits,
        labels: dict[str, str],
        command: list[str] | None = None,
        init: bool = True,
    ) -> LaunchedContainer:
        link = None
        if limits.network:
            self.firewall.ensure_fresh()
            link = self.link
        try:
            container_id = self.create(image, limits, labels, command=command, init=init)
        except Exception as exc:
            raise NotStarted(str(exc)) from exc
        try:
            attached = AttachedContainer(self.client.api, container_id)
            try:
                self.client.api.start(container_id)
                if link is not None:  # before the job: the code never runs unplugged
                    pid = self.client.api.inspect_container(container_id)["State"]["Pid"]
                    link.attach(container_id, pid)
            except Exception:
                attached.hang_up()
                raise
        except Exception as exc:
            try:
                self.remove(container_id)
            except Exception:  # Docker itself may be what failed
                log.debug("container %s not removed after a failed start", container_id[:12])
            raise NotStarted(str(exc)) from exc
        return LaunchedContainer(container_id, attached)

    def docker_answers(self) -> bool:
        try:
            self.client.ping()
        except Exception:
            return False
        return True

    def run(
        self,
        image: str,
        job: dict[str, Any],
        limits: SandboxLimits,
        labels: dict[str, str],
        should_stop: Callable[[], bool] | None = None,
        warm: WarmSpec | None = None,
    ) -> SandboxOutcome:
        """`should_stop` is polled a few times a second; True kills the run (`cancelled`).
        `warm`: run in the code's warm environment when one is ready."""
        begun = time.monotonic()
        if limits.network:  # a pool or warm container too: never run past a stale firewall
            self.firewall.ensure_fresh()
        if warm is not None and self.environments is not None:
            outcome = self.environments.run(image, job, limits, warm, should_stop)
            if outcome is not None:
                return outcome
        container = self.pool.take(image, limits) if self.pool is not None else None
        if container is None:
            container = self.launch(image, limits, labels)
        try:
            outcome = self._execute(container, job, limits, should_stop, begun)
        finally:
            self.dispose(container.id)
        outcome.container_id = container.id[:12]
        return outcome

    def remove(self, container_id: str) -> None:
        remove_quietly(self.client.api, container_id)

    def dispose(self, container_id: str) -> None:
        """Remove a used container, off the caller's path when a reaper is there."""
        if self.reaper is not None:
            self.reaper.remove(container_id)
        else:
            self.remove(container_id)

    def discard(self, container: LaunchedContainer, wait: bool = False) -> None:
        """Hang up first (see AttachedContainer.hang_up), then remove: off the caller's path,
        or before returning with `wait` (when closing, the reaper may be gone)."""
        container.attached.hang_up()
        if wait:
            self.remove(container.id)
        else:
            self.dispose(container.id)

    def _execute(
        self,
        container: LaunchedContainer,
        job: dict[str, Any],
        limits: SandboxLimits,
        should_stop: Callable[[], bool] | None = None,
        begun: float | None = None,
    ) -> SandboxOutcome:
        attached = container.attached
        collector = FrameCollector(limits)
        deadline = time.monotonic() + limits.timeout
        kill_reason: tuple[str, str] | None = None
        stderr_tail = bytearray()
        startup = 0.0
        try:
            attached.send_job(json.dumps(job).encode())
            startup = time.monotonic() - begun if begun is not None else 0.0
            kill_reason = self._pump(
                attached, collector, limits, deadline, stderr_tail, should_stop
            )
        finally:
            attached.hang_up()  # before kill: see AttachedContainer.hang_up
            if kill_reason is not None:
                self._kill(container.id)
        outcome = self._finish(container.id, collector, kill_reason, limits, bytes(stderr_tail))
        outcome.startup_seconds = startup
        return outcome

    def _pump(
        self,
        attached: AttachedContainer,
        collector: FrameCollector,
        limits: SandboxLimits,
        deadline: float,
        stderr_tail: bytearray,
        should_stop: Callable[[], bool] | None = None,
    ) -> tuple[str, str] | None:
        """Read the container's output until EOF; return why to kill it, if we must."""
        decoder = FrameDecoder(max_frame_bytes=limits.output_bytes)
        try:
            output = attached.output(deadline, collector.stream_limit, should_stop)
            for stream, payload in output:
                if stream == STDERR:
                    stderr_tail += payload[: max(0, STDERR_KEEP - len(stderr_tail))]
                    continue
                try:
                    for frame in decoder.feed(payload):
                        collector.take(frame)
                        if collector.violation:
                            return collector.violation
                        if collector.ended:  # the outcome is complete: stop waiting for EOF
                            return None
                except FrameTooLarge:
                    return collector.too_much
                except FrameError as exc:
                    return ExitReason.PROTOCOL, f"engine output was malformed: {exc}"
        except StreamTimeout:
            return ExitReason.TIMEOUT, f"timed out after {limits.timeout:g} s"
        except StreamTooLarge:
            return collector.too_much
        except StreamStopped:
            return ExitReason.CANCELLED, "cancelled"
        collector.torn = decoder.pending > 0
        return None

    def _kill(self, container_id: str) -> None:
        try:
            self.client.api.kill(container_id)
        except Exception as exc:
            log.debug("kill %s: %s", container_id[:12], exc)

    def _finish(
        self,
        container_id: str,
        collector: FrameCollector,
        kill_reason: tuple[str, str] | None,
        limits: SandboxLimits,
        stderr_tail: bytes,
    ) -> SandboxOutcome:
        outcome = collector.outcome
        if kill_reason is not None:
            outcome.status, outcome.exit_reason, outcome.error = RunStatus.FAILED, *kill_reason
            return outcome
        if collector.ended and outcome.status == RunStatus.COMPLETED:
            return outcome  # a failed end may still be the memory limit: ask Docker
        state = final_state(self.client.api, container_id)
        if not state and not collector.ended:
            return engine_lost(outcome)
        if state.get("OOMKilled") or not collector.ended:
            detail = clean_text(stderr_tail.decode("utf-8", "replace").strip()[-500:])
            describe_exit(outcome, bool(state.get("OOMKilled")), state.get("ExitCode"),
                          limits, detail)
            if collector.torn and outcome.exit_reason != "memory_limit":
                outcome.error = f"{TORN_FRAME}: {outcome.error}"
        return outcome


#: What each runtime says when fork or a new thread fails: the container's pids limit.
OUT_OF_PROCESSES = (
    "can't start new thread",  # Python
    "failed to create new OS thread",  # the Go runtime
    "fork: Resource temporarily unavailable",  # glibc's and the shells' words
    "fork: retry",
    "Cannot fork",
    "pthread_create",  # Node, V8 and other C runtimes
)


def engine_lost(outcome: SandboxOutcome) -> SandboxOutcome:
    """Docker cannot say how the run's container ended: it stopped or lost it (a restart).
    The platform failed, not the code, so the caller is told to try again (503)."""
    outcome.status, outcome.answered = RunStatus.FAILED, False
    outcome.exit_reason = ExitReason.SANDBOX_ERROR
    outcome.error = "the container engine stopped or lost the run's container"
    return outcome


def describe_exit(
    outcome: SandboxOutcome,
    oom: bool,
    exit_code: int | None,
    limits: SandboxLimits,
    detail: str = "",
) -> None:
    """Why an engine stopped without (or despite) its end frame: out of memory, killed, or
    crashed; the same words for a one-run container and a warm environment's process."""
    outcome.status = RunStatus.FAILED
    outcome.answered = False  # a limit or a crash, not the code's own failure
    if oom:
        outcome.exit_reason = ExitReason.MEMORY_LIMIT
        outcome.error = f"memory limit exceeded ({human_size(limits.memory_bytes)})"
        return
    if exit_code == 137:
        outcome.exit_reason, outcome.error = ExitReason.KILLED, "the run was killed (exit code 137)"
    else:
        outcome.exit_reason = ExitReason.CRASHED
        outcome.error = f"the engine stopped without a result (exit code {exit_code})"
    if any(sign in detail for sign in OUT_OF_PROCESSES):
        outcome.error += f" after reaching its process limit ({limits.pids} processes)"
    if detail:
        outcome.error += f": {detail}"


def human_size(size: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"
