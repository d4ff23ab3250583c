"""The engine's framed output and the warm supervisor's markers (engines/PROTOCOL.md): the
one encoder and the one decoder of the format. Every frame read is untrusted input.

A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON (an object). A warm
supervisor's marker is the same with the length's high bit set; only readers that expect
markers accept it (to everyone else it is an oversized frame).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

_HEADER = struct.Struct(">I")
MARKER_BIT = 0x80000000
#: A marker is a short supervisor message; anything longer is a broken stream.
MARKER_MAX = 64 * 1024


class FrameError(ValueError):
    """The stream is not a clean sequence of frames."""


class FrameTooLarge(FrameError):
    """A frame announced more bytes than the reader accepts."""


def encode_frame(message: dict[str, Any], *, marker: bool = False) -> bytes:
    data = json.dumps(message).encode()
    return _HEADER.pack(len(data) | (MARKER_BIT if marker else 0)) + data


class FrameDecoder:
    """Feed bytes as they arrive, take complete frames out. Oversized → FrameTooLarge;
    garbled or not an object → FrameError."""

    def __init__(self, max_frame_bytes: int, *, markers: bool = False) -> None:
        #: Bytes not yet taken as frames (a reader that resynchronises may drop a prefix).
        self.buffer = bytearray()
        self.max_frame_bytes = max_frame_bytes
        self._markers = markers

    def add(self, data: bytes) -> None:
        self.buffer += data

    def next_frame(self) -> tuple[bool, dict[str, Any]] | None:
        """(is a marker, message) of the next complete frame, or None until more arrives."""
        if len(self.buffer) < _HEADER.size:
            return None
        (header,) = _HEADER.unpack_from(self.buffer)
        is_marker = self._markers and bool(header & MARKER_BIT)
        size = header & ~MARKER_BIT if is_marker else header
        limit = MARKER_MAX if is_marker else self.max_frame_bytes
        if size > limit:
            raise FrameTooLarge(f"frame of {size} bytes exceeds {limit}")
        if len(self.buffer) < _HEADER.size + size:
            return None
        payload = bytes(self.buffer[_HEADER.size : _HEADER.size + size])
        try:
            message = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FrameError(f"undecodable frame: {exc}") from None
        if not isinstance(message, dict):
            raise FrameError("a frame is not an object")
        # Taken only once whole and sound: a garbled frame stays for a reader to resync past.
        del self.buffer[: _HEADER.size + size]
        return is_marker, message

    def feed(self, data: bytes) -> Iterator[dict[str, Any]]:
        """Add `data` and yield every frame it completes."""
        self.add(data)
        while (frame := self.next_frame()) is not None:
            yield frame[1]

    @property
    def pending(self) -> int:
        return len(self.buffer)


def decode_all(data: bytes, max_frame_bytes: int = 1 << 31) -> list[dict[str, Any]]:
    """Every frame of a finished stream; FrameError if anything else is on it (stray bytes,
    a truncated frame)."""
    decoder = FrameDecoder(max_frame_bytes)
    frames = list(decoder.feed(data))
    if decoder.pending:
        raise FrameError(f"{decoder.pending} stray or truncated bytes at the end")
    return frames
