"""The HTTP layer in front of Flask: gunicorn's threaded worker, with two changes.

1. A bounded read. A request's line, headers and body must have arrived within
   `FLOWS_CODE_ACTIONS_API_REQUEST_READ_TIMEOUT` seconds (30) of a thread taking it up;
   otherwise the caller gets a 408 and the connection closes. Without it a request whose
   `Content-Length` exceeds what is sent, or headers trickled a byte at a time, hold a
   thread until the peer gives up (over 70 s measured), and 32 such requests stop a worker.
   The deadline applies to reads only, until the response starts: a sync call may then wait
   up to its code's timeout, which reads nothing.
2. JSON errors. What gunicorn refuses itself (a request line over the limit → 414, headers
   too large → 431, a malformed request line, header or chunk → 400) leaves as
   `{"message": ...}` like every other error of the API, not as gunicorn's HTML page.

`codeactions api` selects this worker (`worker_class`); Flask sees the same WSGI requests.
"""

from __future__ import annotations

import json
import time
from typing import Any

from gunicorn import util
from gunicorn.workers import gthread

READ_TIMEOUT_MESSAGE = "the request was not received in time (line, headers and body)"


class RequestReadTimeout(Exception):  # noqa: N818 - named for what the caller sees
    """The request's bytes did not all arrive before its read deadline.

    Not an OSError on purpose: gunicorn swallows those silently, and this one is answered
    (408) wherever it surfaces: while gunicorn parses the head, or while Flask reads the
    body (api/errors.py)."""


class _DeadlineSocket:
    """The client socket as gunicorn's request parser sees it: every `recv` waits at most
    until the connection's current deadline. Everything else goes to the socket itself."""

    def __init__(self, sock: Any, state: _ReadState) -> None:
        self._sock = sock
        self._state = state

    def recv(self, size: int, *flags: int) -> bytes:
        deadline = self._state.deadline
        if deadline is None:
            return self._sock.recv(size, *flags)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self._state.expired = True
            raise RequestReadTimeout(READ_TIMEOUT_MESSAGE)
        previous = self._sock.gettimeout()
        self._sock.settimeout(remaining)
        try:
            return self._sock.recv(size, *flags)
        except TimeoutError:
            self._state.expired = True
            raise RequestReadTimeout(READ_TIMEOUT_MESSAGE) from None
        finally:
            try:
                self._sock.settimeout(previous)
            except OSError:  # the peer is gone; the caller's next step finds out
                pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _ReadState:
    """One connection's read deadline (None: reads wait as gunicorn would) and whether it
    passed (the connection is then closed: where the next request starts is unknown)."""

    def __init__(self) -> None:
        self.deadline: float | None = None
        self.expired = False


def _json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's `util.write_error`, with a JSON body."""
    body = json.dumps({"message": mesg or reason.lower()}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


class ThreadWorker(gthread.ThreadWorker):
    """gunicorn's `gthread` worker with a bounded read and JSON errors (module docstring)."""

    read_timeout = 30.0  # set by `codeactions api` from the settings

    def init_process(self) -> None:
        # gunicorn writes every error it answers itself through this one function; in this
        # (worker) process they are JSON.
        util.write_error = _json_error
        super().init_process()

    def handle(self, conn: gthread.TConn) -> Any:
        state = getattr(conn, "read_state", None)
        if state is None:
            state = conn.read_state = _ReadState()
            plain_init = conn.init

            def init() -> None:  # the parser reads through the deadline
                plain_init()  # gunicorn calls it before every request; it works once
                unreader = getattr(conn.parser, "unreader", None)
                sock = getattr(unreader, "sock", None)
                if unreader is not None and sock is not None and not isinstance(
                    sock, _DeadlineSocket
                ):
                    unreader.sock = _DeadlineSocket(sock, state)

            conn.init = init
        state.deadline = time.monotonic() + self.read_timeout
        return super().handle(conn)

    def handle_request(self, req: Any, conn: gthread.TConn) -> bool:
        keepalive = super().handle_request(req, conn)
        conn.read_state.deadline = None  # answered: gunicorn's own drain bounds the rest
        return keepalive and not conn.read_state.expired

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        if isinstance(exc, RequestReadTimeout):
            self.log.info("request not received within %.0f s from %s", self.read_timeout,
                          (addr or ("",))[0])
            try:
                _json_error(client, 408, "Request Timeout", str(exc))
            except OSError:
                pass
            return
        super().handle_error(req, client, addr, exc)
