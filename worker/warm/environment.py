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

import json
import logging
import secrets
import select
import socket
import time
from collections.abc import Callable
from typing import Any

from shared.runs.statuses import ExitReason, RunStatus
from worker.metrics import fast_path_metrics
from worker.sandbox.sandbox import (
    STDERR_KEEP,
    TORN_FRAME,
    FrameCollector,
    LaunchedContainer,
    Sandbox,
    SandboxLimits,
    SandboxOutcome,
    clean_text,
    describe_exit,
    engine_lost,
)
from worker.wire.attach_stream import (
    STDOUT,
    StreamDemuxer,
    StreamStopped,
    StreamTimeout,
    StreamTooLarge,
    final_state,
)
from worker.wire.frames import (
    MARKER_BIT,
    MARKER_MAX,
    FrameDecoder,
    FrameError,
    FrameTooLarge,
    encode_frame,
)

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
    """The container's attach stream, demultiplexed and cut into frames, kept across runs.

    Both streams count against a run's output cap, as in a one-run container: a run (or its
    child) writing to the container's stderr is output too, and Docker carries every byte.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._demuxer = StreamDemuxer()
        self._frames = FrameDecoder(0, markers=True)
        self._stdout = self._frames.buffer  # read by `_resync`, which may drop a torn piece
        self.received = 0  # stdout and stderr bytes since the last `count_from_zero`
        #: While a run is on: StreamTooLarge once `received` passes it.
        self.limit: int | None = None
        #: The current run's nonce: the supervisor's markers carry it and the run cannot know
        #: it, so finding it in the stream while a frame is incomplete means the run's
        #: process died in the middle of that frame (see `_resync`).
        self.nonce = ""
        self.truncated = False
        self._searched = 0
        #: The start of what the run wrote to stderr: a crash's own words, for its reason.
        self.stderr_head = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def count_from_zero(self, limit: int | None = None, nonce: str = "") -> None:
        self.received = 0
        self.limit = limit
        self.nonce = nonce
        self.truncated = False
        self._searched = 0
        self.stderr_head = bytearray()

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
        FrameError, StreamTooLarge past `limit`, or WarmEnvironmentError at EOF."""
        next_check = time.monotonic() + check_every
        while True:
            if self.limit is not None and self.received > self.limit:
                raise StreamTooLarge
            try:
                parsed = self._parse(max_frame)
            except (FrameTooLarge, FrameError):
                self._searched = 0  # a torn frame's header may claim anything: look first
                if self._resync():
                    continue
                raise
            if parsed is not None:
                return parsed
            if self._resync():
                continue
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
                self._demux(chunk)

    def _demux(self, chunk: bytes) -> None:
        for stream, payload in self._demuxer.feed(chunk):
            if stream == STDOUT:
                self._frames.add(payload)
            elif len(self.stderr_head) < STDERR_KEEP:  # stderr is counted, never read as frames
                self.stderr_head += payload
                del self.stderr_head[STDERR_KEEP:]
            self.received += len(payload)

    def _resync(self) -> bool:
        """A frame is incomplete: when the current nonce shows up after its start, the run's
        process died mid-frame and the supervisor's marker follows the torn piece. Drop the
        piece (up to the marker's header) and say so; the marker is then read as usual."""
        if not self.nonce or len(self._stdout) < 4:
            return False
        needle = self.nonce.encode()
        found = self._stdout.find(needle, max(4, self._searched - len(needle)))
        self._searched = len(self._stdout)
        while found != -1:
            if self._marker_before(found):
                return True
            # Not (yet) a whole marker: look at this nonce again when more has arrived.
            self._searched = min(self._searched, found)
            found = self._stdout.find(needle, found + 1)
        return False

    def _marker_before(self, found: int) -> bool:
        """Is there a whole marker with our nonce whose JSON holds position `found`? Then
        everything before it is dropped."""
        for begin in range(found - 5, max(-1, found - MARKER_MAX - 5), -1):
            header = int.from_bytes(self._stdout[begin : begin + 4], "big")
            size = header & ~MARKER_BIT
            end = begin + 4 + size
            if not header & MARKER_BIT or size > MARKER_MAX or end <= found or end > len(
                    self._stdout):
                continue
            try:
                message = json.loads(bytes(self._stdout[begin + 4 : end]))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(message, dict) and message.get("nonce") == self.nonce:
                del self._stdout[:begin]
                self._searched = 0
                self.truncated = True
                return True
        return False

    def _parse(self, max_frame: int) -> tuple[bool, dict[str, Any]] | None:
        self._frames.max_frame_bytes = max_frame
        before = len(self._stdout)
        parsed = self._frames.next_frame()
        self._searched = max(0, self._searched - (before - len(self._stdout)))
        return parsed


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
        #: Resident mode: the process stays after its end frame, failed or not (no exit to
        #: wait for).
        self.resident = bool(bind.get("resident"))
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
            self.stream.count_from_zero(collector.stream_limit, self._nonce)
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
                if collector.ended and collector.outcome.status == RunStatus.COMPLETED:
                    break
                if collector.ended and self.resident:
                    break
                if collector.ended:  # a failure may be the memory limit: the exit tells
                    deadline = min(deadline, time.monotonic() + EXIT_WAIT)
        except StreamTooLarge:
            reason = collector.too_much
        except StreamTimeout:
            if not collector.ended:
                reason = (ExitReason.TIMEOUT, f"timed out after {limits.timeout:g} s")
        except StreamStopped:
            reason = (ExitReason.CANCELLED, "cancelled")
        except FrameTooLarge:
            reason, self.broken = collector.too_much, True
        except FrameError as exc:
            reason, self.broken = (ExitReason.PROTOCOL, f"engine output was malformed: {exc}"), True
        except (WarmEnvironmentStopped, OSError):
            self.broken = True
        except WarmEnvironmentError as exc:
            reason, self.broken = (ExitReason.PROTOCOL, f"engine output was malformed: {exc}"), True
        self.stream.limit = None  # what it writes until `finish` takes effect counts no more
        if not self.broken:
            # `ended`: the run is over by its own end frame, within its limits (a resident
            # process is kept for the next run only then: engines/PROTOCOL.md).
            ended = collector.ended and reason is None and exited is None
            try:
                self.stream.send(encode_frame({"t": "finish", "ended": ended}))
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
                if done.get("kept") is False:
                    fast_path_metrics().resident_fresh.inc()
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
            outcome.status, outcome.exit_reason, outcome.error = RunStatus.FAILED, *reason
        elif exited is not None:
            if exited.get("oom") or not collector.ended:
                detail = ""
                if self.stream is not None:
                    detail = clean_text(self.stream.stderr_head.decode("utf-8", "replace")
                                        .strip()[-500:])
                describe_exit(outcome, bool(exited.get("oom")), exited.get("exit_code"),
                              self.limits, detail)
                if self.stream is not None and self.stream.truncated and not exited.get("oom"):
                    outcome.error = f"{TORN_FRAME}: {outcome.error}"
        elif not collector.ended:  # the container itself stopped (killed, out of memory)
            state = final_state(self.sandbox.client.api, self.container_id, wait_seconds=2)
            if not state:
                return engine_lost(outcome)
            describe_exit(outcome, bool(state.get("OOMKilled")), state.get("ExitCode"),
                          self.limits)
            if outcome.exit_reason == "crashed":  # its PID 1 went: say whose fault it is
                outcome.error = outcome.error.replace(
                    "the engine stopped", "the warm environment's supervisor stopped", 1)
        return outcome
