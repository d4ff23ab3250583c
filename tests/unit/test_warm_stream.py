"""A warm environment's stream, read as the worker reads it (worker/warm/environment.py): both
streams count against a run's cap, and a frame torn by a dying run gives way to the
supervisor's marker at once."""

from __future__ import annotations

import json
import socket
import time

import pytest

from worker.warm.environment import WarmStream
from worker.wire.attach_stream import StreamTooLarge
from worker.wire.frames import MARKER_BIT


def _docker(stream: int, payload: bytes) -> bytes:
    """One piece of Docker's multiplexed attach stream."""
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def _marker(message: dict) -> bytes:
    data = json.dumps(message).encode()
    return (MARKER_BIT | len(data)).to_bytes(4, "big") + data


def _frame(message: dict) -> bytes:
    data = json.dumps(message).encode()
    return len(data).to_bytes(4, "big") + data


@pytest.fixture
def pair():  # noqa: ANN201
    ours, theirs = socket.socketpair()
    yield WarmStream(ours), theirs
    ours.close()
    theirs.close()


def test_stderr_counts_against_the_runs_cap(pair) -> None:  # noqa: ANN001
    stream, container = pair
    stream.count_from_zero(limit=100_000, nonce="n" * 32)
    for _ in range(4):
        container.sendall(_docker(2, b"E" * 40_000))
    with pytest.raises(StreamTooLarge):
        stream.next(time.monotonic() + 5, 1 << 20)


def test_a_torn_frame_gives_way_to_the_supervisors_marker(pair) -> None:  # noqa: ANN001
    stream, container = pair
    nonce = "0123456789abcdef" * 2
    stream.count_from_zero(limit=1 << 20, nonce=nonce)
    exited = {"t": "exited", "nonce": nonce, "exit_code": 137, "oom": False}
    container.sendall(_docker(1, _frame({"t": "log", "level": "info", "content": "whole"})))
    torn = (1000).to_bytes(4, "big") + b'{"t": "log", "content": "to'
    container.sendall(_docker(1, torn) + _docker(1, _marker(exited)))
    assert stream.next(time.monotonic() + 5, 1 << 20) == (
        False, {"t": "log", "level": "info", "content": "whole"})
    assert stream.next(time.monotonic() + 5, 1 << 20) == (True, exited)
    assert stream.truncated


def test_a_forged_marker_without_the_nonce_changes_nothing(pair) -> None:  # noqa: ANN001
    from worker.wire.attach_stream import StreamTimeout

    stream, container = pair
    stream.count_from_zero(limit=1 << 20, nonce="f" * 32)
    forged = _marker({"t": "exited", "nonce": "0" * 32, "exit_code": 0, "oom": False})
    container.sendall(_docker(1, (1000).to_bytes(4, "big") + b"{" + forged))
    with pytest.raises(StreamTimeout):
        stream.next(time.monotonic() + 0.3, 1 << 20)
    assert not stream.truncated
