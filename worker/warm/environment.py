"""One warm environment: a hardened container bound to one code, whose supervisor (PID 1)
forks a fresh process for every run (engines/PROTOCOL.md, "Warm environments").

The worker side of that protocol. Worker → supervisor, on stdin, 4-byte big-endian length +
JSON: `bind` once (the code, a nonce), then per run the job (read by the run's own process,
never by the supervisor), a `seal` (nonce, timeout) and, once the run is over for us, one
`finish`. Supervisor → worker, on stdout: the run's frames as the one-shot harness writes
them, and the supervisor's markers (`ready`, `exited`, `done`), whose length carries the high
bit and whose nonce must be the one we sent after the run took its job. Anything else on the
stream breaks the environment: it is destroyed, never reused.
"""

from __future__ import annotations

import logging
import secrets
import select
import socket
import time
from collections.abc import Callable
from typing import Any

from worker.sandbox.sandbox import (
    FrameCollector,
    LaunchedContainer,
    Sandbox,
    SandboxLimits,
    SandboxOutcome,
    describe_exit,
)
from worker.wire.attach_stream import (
    STDOUT,
    StreamDemuxer,
    StreamStopped,
    StreamTimeout,
    final_state,
)
from worker.wire.frames import MARKER_MAX, FrameDecoder, FrameError, FrameTooLarge, encode_frame

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0
DRAIN_TIMEOUT = 5.0
#: After a failed end frame, how long to wait for the process's exit (was it out of memory?).
EXIT_WAIT = 2.0


class WarmEnvironmentError(Exception):
    """The environment cannot be trusted or used any more."""


class WarmEnvironmentStopped(WarmEnvironmentError):
    """Its container ended (the stream closed)."""


class WarmStream:
    """The container's attach stream, demultiplexed and cut into frames, kept across runs."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._demuxer = StreamDemuxer()
        self._frames = FrameDecoder(0, markers=True)
        self.received = 0  # stdout bytes since the last `count_from_zero`

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def count_from_zero(self) -> None:
        self.received = 0

    @property
    def pending(self) -> int:
        """Bytes received and not yet read as frames."""
        return self._demuxer.pending + self._frames.pending

    def next(
        self,
        deadline: float,
        max_frame: int,
        should_stop: Callable[[], bool] | None = None,
        check_every: float = 0.25,
    ) -> tuple[bool, dict[str, Any]]:
        """(is a supervisor marker, message). StreamTimeout, StreamStopped, FrameTooLarge,
        FrameError, or WarmEnvironmentError at EOF."""
        self._frames.max_frame_bytes = max_frame
        next_check = time.monotonic() + check_every
        while True:
            parsed = self._frames.next_frame()
            if parsed is not None:
                return parsed
            now = time.monotonic()
            if now >= deadline:
                raise StreamTimeout
            if should_stop is not None and now >= next_check:
                next_check = now + check_every
                if should_stop():
                    raise StreamStopped
            wait = min(deadline - now, check_every) if should_stop else deadline - now
            readable, _, _ = select.select([self.sock], [], [], wait)
            if readable:
                chunk = self.sock.recv(1024 * 1024)
                if not chunk:
                    raise WarmEnvironmentStopped("the warm environment stopped")
                for stream, payload in self._demuxer.feed(chunk):
                    if stream == STDOUT:  # stderr only ever holds the engine's own noise
                        self._frames.add(payload)
                        self.received += len(payload)


class WarmEnvironment:
    def __init__(
        self,
        sandbox: Sandbox,
        key: tuple[Any, ...],
        image: str,
        limits: SandboxLimits,
        labels: dict[str, str],
        bind: dict[str, Any],
    ) -> None:
        self.sandbox = sandbox
        self.key = key
        self.image = image
        self.limits = limits
        self.labels = labels
        self.bind = bind
        self.container: LaunchedContainer | None = None
        self.stream: WarmStream | None = None
        self.runs = 0
        self.last_used = time.monotonic()
        self.broken = False
        self._nonce = ""

    @property
    def container_id(self) -> str:
        return self.container.id if self.container else ""

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the container and bind it to the code; WarmEnvironmentError if it is not
        ready in time."""
        self.container = self.sandbox.launch(
            self.image, self.limits, self.labels, command=["serve"], init=False
        )
        self.stream = WarmStream(self.container.attached.sock)
        self._nonce = secrets.token_hex(16)
        try:
            self.stream.send(encode_frame({"t": "bind", "nonce": self._nonce, **self.bind}))
            is_marker, message = self.stream.next(time.monotonic() + timeout, MARKER_MAX)
        except (OSError, StreamTimeout, FrameError) as exc:
            raise WarmEnvironmentError(f"the warm environment did not start: {exc}") from exc
        self._expect(is_marker, message, "ready")
        self.bind = {}  # nothing of the code's artifact is kept around

    def usable(self) -> bool:
        """Idle and alive: after its `done` a supervisor writes nothing until the next job, so
        anything readable means the container ended (or misbehaves)."""
        if self.broken or self.container is None or self.stream is None or self.stream.pending:
            return False
        return self.container.attached.quiet()

    def run(
        self,
        job: dict[str, Any],
        limits: SandboxLimits,
        should_stop: Callable[[], bool] | None = None,
    ) -> SandboxOutcome:
        """One run in a fresh process; returns at the engine's `end` (the clean-up after it
        is `drain`'s)."""
        assert self.stream is not None and self.container is not None
        self.runs += 1
        self.last_used = time.monotonic()
        self._nonce = secrets.token_hex(16)
        collector = FrameCollector(limits)
        reason: tuple[str, str] | None = None
        exited: dict[str, Any] | None = None
        seal = {"t": "seal", "nonce": self._nonce, "timeout_ms": int(limits.timeout * 1000)}
        deadline = time.monotonic() + limits.timeout
        try:
            self.stream.count_from_zero()
            self.stream.send(encode_frame(job) + encode_frame(seal))
            while True:
                is_marker, message = self.stream.next(deadline, limits.output_bytes, should_stop)
                if is_marker:
                    exited = self._expect(is_marker, message, "exited")
                    break
                if collector.ended:
                    continue  # nothing counts after the end frame
                collector.take(message)
                if collector.violation:
                    reason = collector.violation
                    break
                if collector.ended and collector.outcome.status == "completed":
                    break
                if collector.ended:  # a failure may be the memory limit: the exit tells
                    deadline = min(deadline, time.monotonic() + EXIT_WAIT)
                if self.stream.received > collector.stream_limit:
                    reason = collector.too_much
                    break
        except StreamTimeout:
            if not collector.ended:
                reason = ("timeout", f"timed out after {limits.timeout:g} s")
        except StreamStopped:
            reason = ("cancelled", "cancelled")
        except FrameTooLarge:
            reason, self.broken = collector.too_much, True
        except FrameError as exc:
            reason, self.broken = ("protocol", f"engine output was malformed: {exc}"), True
        except (WarmEnvironmentStopped, OSError):
            self.broken = True
        except WarmEnvironmentError as exc:
            reason, self.broken = ("protocol", f"engine output was malformed: {exc}"), True
        if not self.broken:
            try:
                self.stream.send(encode_frame({"t": "finish"}))
            except OSError:
                self.broken = True
        return self._outcome(collector, reason, exited)

    def drain(self, timeout: float = DRAIN_TIMEOUT) -> bool:
        """Wait for the supervisor's `done` after a run: True when the environment is clean
        and ready for the next one."""
        if self.broken or self.stream is None:
            return False
        deadline = time.monotonic() + timeout
        try:
            while True:
                is_marker, message = self.stream.next(deadline, self.limits.output_bytes)
                if not is_marker:
                    continue  # what the run wrote after its end frame counts for nothing
                if message.get("t") == "exited" and message.get("nonce") == self._nonce:
                    continue
                done = self._expect(is_marker, message, "done")
                return done.get("clean") is True
        except (StreamTimeout, FrameError, WarmEnvironmentError, OSError) as exc:
            log.warning("warm environment %s not reusable: %s", self.container_id[:12], exc)
            self.broken = True
            return False

    def destroy(self) -> None:
        if self.container is not None:
            self.sandbox.discard(self.container)

    # ------------------------------------------------------------------ internals

    def _expect(self, is_marker: bool, message: dict[str, Any], kind: str) -> dict[str, Any]:
        if not is_marker or message.get("t") != kind or message.get("nonce") != self._nonce:
            self.broken = True
            raise WarmEnvironmentError(f"expected the supervisor's {kind!r}, got {message!r}")
        return message

    def _outcome(
        self,
        collector: FrameCollector,
        reason: tuple[str, str] | None,
        exited: dict[str, Any] | None,
    ) -> SandboxOutcome:
        outcome = collector.outcome
        outcome.container_id = self.container_id[:12]
        if reason is not None:
            outcome.status, outcome.exit_reason, outcome.error = "failed", *reason
        elif exited is not None:
            if exited.get("oom") or not collector.ended:
                describe_exit(outcome, bool(exited.get("oom")), exited.get("exit_code"),
                              self.limits)
        elif not collector.ended:  # the container itself stopped (killed, out of memory)
            state = final_state(self.sandbox.client.api, self.container_id, wait_seconds=2)
            describe_exit(outcome, bool(state.get("OOMKilled")), state.get("ExitCode"),
                          self.limits)
        return outcome
