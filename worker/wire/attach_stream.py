"""Talking to a container over Docker's attach stream: job in on stdin, output demultiplexed.

Shared by the run sandbox and the Go compiler, which both write one job and read frames.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

STDOUT, STDERR = 1, 2
_HEADER = struct.Struct(">BxxxI")  # stream id, 3 padding bytes, payload length


def final_state(api: Any, container_id: str, wait_seconds: float = 5) -> dict[str, Any]:
    """The container's State once it has exited (OOMKilled, ExitCode); {} if unknown."""
    try:
        api.wait(container_id, timeout=wait_seconds)
        return api.inspect_container(container_id).get("State", {})
    except Exception:  # gone, or the engine is slow: the caller reports what it knows
        return {}


class StreamTimeout(Exception):
    """The deadline passed before the container closed its output."""


class StreamTooLarge(Exception):
    """The container wrote more than the caller allows."""


class StreamStopped(Exception):
    """The caller's `check` asked to stop (e.g. the run was cancelled)."""


class StreamDemuxer:
    """Docker's multiplexed attach stream cut back into (stream id, bytes) pieces."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> Iterator[tuple[int, bytes]]:
        self._buffer += chunk
        while len(self._buffer) >= _HEADER.size:
            stream, size = _HEADER.unpack_from(self._buffer)
            if len(self._buffer) < _HEADER.size + size:
                return
            payload = bytes(self._buffer[_HEADER.size : _HEADER.size + size])
            del self._buffer[: _HEADER.size + size]
            yield stream, payload

    @property
    def pending(self) -> int:
        return len(self._buffer)


class AttachedContainer:
    """An attach connection opened before `start`, so no output can be missed."""

    def __init__(self, api: Any, container_id: str) -> None:
        self._attached = api.attach_socket(
            container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        )
        self.sock: socket.socket = getattr(self._attached, "_sock", self._attached)

    def send_job(self, payload: bytes) -> None:
        """Write the whole job, then close stdin so the harness sees EOF."""
        self.sock.sendall(payload)
        self.sock.shutdown(socket.SHUT_WR)

    def output(
        self,
        deadline: float,
        max_bytes: int,
        should_stop: Callable[[], bool] | None = None,
        check_every: float = 0.25,
    ) -> Iterator[tuple[int, bytes]]:
        """(stream id, bytes) pieces until EOF; StreamTimeout / StreamTooLarge otherwise.
        `should_stop` is asked every `check_every` seconds; True raises StreamStopped."""
        demuxer = StreamDemuxer()
        received = 0
        next_check = time.monotonic() + check_every
        while True:
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                raise StreamTimeout
            if should_stop is not None and now >= next_check:
                next_check = now + check_every
                if should_stop():
                    raise StreamStopped
            wait = min(left, check_every) if should_stop is not None else left
            readable, _, _ = select.select([self.sock], [], [], wait)
            if not readable:
                continue
            chunk = self.sock.recv(1024 * 1024)
            if not chunk:
                return
            received += len(chunk)
            if received > max_bytes:
                raise StreamTooLarge
            yield from demuxer.feed(chunk)

    def quiet(self) -> bool:
        """Nothing to read: a container waiting for its job writes nothing, so a readable
        stream means it ended (EOF) or misbehaves."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def hang_up(self) -> None:
        """Really close the connection: shutdown first, since docker-py's wrapper holds a
        reference that would keep the descriptor open. A container blocked writing to an
        unread attach stream can otherwise stall Docker's kill."""
        for action in (lambda: self.sock.shutdown(socket.SHUT_RDWR), self.sock.close,
                       self._attached.close):
            try:
                action()
            except OSError:
                pass
