"""Decode the engine's framed output (engines/PROTOCOL.md). Every frame is untrusted input."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

_HEADER = struct.Struct(">I")


class FrameError(ValueError):
    pass


class FrameTooLarge(FrameError):
    """A frame announced more bytes than the reader accepts."""


class FrameDecoder:
    """Feed bytes as they arrive; iterate complete frames. Oversized → FrameTooLarge, garbled
    → FrameError."""

    def __init__(self, max_frame_bytes: int) -> None:
        self._buffer = bytearray()
        self._max = max_frame_bytes

    def feed(self, data: bytes) -> Iterator[dict[str, Any]]:
        self._buffer += data
        while len(self._buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buffer)
            if size > self._max:
                raise FrameTooLarge(f"frame of {size} bytes exceeds {self._max}")
            if len(self._buffer) < _HEADER.size + size:
                return
            payload = bytes(self._buffer[_HEADER.size : _HEADER.size + size])
            del self._buffer[: _HEADER.size + size]
            try:
                frame = json.loads(payload.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise FrameError(f"undecodable frame: {exc}") from None
            if isinstance(frame, dict):
                yield frame

    @property
    def pending(self) -> int:
        return len(self._buffer)
