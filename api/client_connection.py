"""Whether the caller of a waiting request is still there.

A sync call holds its client while the run executes; if the client goes away, the run is
cancelled rather than left burning a sandbox for nobody. gunicorn hands us the client socket
(`gunicorn.socket`): a socket that is readable yet yields no byte has been closed by the peer.
"""

from __future__ import annotations

import select
import socket

from flask import request


class ClientConnection:
    def __init__(self, sock: socket.socket | None) -> None:
        self._sock = sock
        self.closed = False

    @classmethod
    def of_request(cls) -> ClientConnection:
        return cls(request.environ.get("gunicorn.socket"))

    def gone(self) -> bool:
        """Polled while waiting; True once the peer has closed its end (sticky)."""
        if self.closed or self._sock is None:
            return self.closed
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
            # Readable with data means a pipelined next request: the client is still there.
            self.closed = bool(readable) and self._sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            self.closed = True
        return self.closed
