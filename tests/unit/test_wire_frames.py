"""The one wire format (worker/wire): what the worker accepts from an engine's stdout and a warm
supervisor, byte by byte as it may arrive."""

from __future__ import annotations

import pytest

from worker.wire.attach_stream import STDERR, STDOUT, StreamDemuxer
from worker.wire.frames import (
    MARKER_MAX,
    FrameDecoder,
    FrameError,
    FrameTooLarge,
    decode_all,
    encode_frame,
)


def test_frames_arrive_whole_whatever_the_chunking() -> None:
    data = encode_frame({"t": "log", "m": "é"}) + encode_frame({"t": "end"})
    decoder = FrameDecoder(1024)
    frames = [frame for byte in data for frame in decoder.feed(bytes([byte]))]
    assert frames == [{"t": "log", "m": "é"}, {"t": "end"}]
    assert decoder.pending == 0


def test_a_marker_is_only_a_marker_where_one_is_expected() -> None:
    marker = encode_frame({"t": "ready"}, marker=True)
    warm = FrameDecoder(1024, markers=True)
    warm.add(marker + encode_frame({"t": "end"}))
    assert warm.next_frame() == (True, {"t": "ready"})
    assert warm.next_frame() == (False, {"t": "end"})
    # one-shot output never carries markers: a high bit is an oversized frame
    with pytest.raises(FrameTooLarge):
        list(FrameDecoder(1024).feed(marker))


def test_oversized_frames_and_markers_are_refused_before_their_bytes_arrive() -> None:
    with pytest.raises(FrameTooLarge):
        list(FrameDecoder(10).feed((11).to_bytes(4, "big")))
    warm = FrameDecoder(1 << 20, markers=True)
    warm.add((0x80000000 | (MARKER_MAX + 1)).to_bytes(4, "big"))
    with pytest.raises(FrameTooLarge):
        warm.next_frame()


@pytest.mark.parametrize("payload", [b"\xff\xfe", b"{not json", b"[1, 2]", b'"text"'])
def test_garbled_frames_are_errors(payload: bytes) -> None:
    with pytest.raises(FrameError):
        list(FrameDecoder(1024).feed(len(payload).to_bytes(4, "big") + payload))


def test_a_finished_stream_holds_nothing_but_frames() -> None:
    frame = encode_frame({"t": "end"})
    assert decode_all(frame * 2) == [{"t": "end"}] * 2
    with pytest.raises(FrameError):
        decode_all(frame + b"hi")
    with pytest.raises(FrameError):
        decode_all(frame[:-1])


def test_the_attach_stream_is_cut_back_into_its_streams() -> None:
    def piece(stream: int, data: bytes) -> bytes:
        return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data

    data = piece(STDOUT, b"out") + piece(STDERR, b"err") + piece(STDOUT, b"!")
    demuxer = StreamDemuxer()
    pieces = list(demuxer.feed(data[:5])) + list(demuxer.feed(data[5:]))
    assert pieces == [(STDOUT, b"out"), (STDERR, b"err"), (STDOUT, b"!")]
    assert demuxer.pending == 0
