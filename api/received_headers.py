"""Request headers as the caller sent them, for the code a public endpoint runs.

WSGI cannot carry them: a repeated header reaches the environ as one joined value, and
gunicorn drops names with `_` (they would land on the same `HTTP_*` key as their `-`
spelling). The Go service passed both through, and stored code reads them. So under
gunicorn (`codeactions api`), the parser is told to keep `_` names (`header_map=dangerous`),
and the `pre_request` hook below takes the received list for the code, then removes every
`_` name before gunicorn builds the environ: the platform itself still sees exactly what
`header_map=drop` gives it (no `X_Forwarded_For` posing as `X-Forwarded-For`, no client
`SCRIPT_NAME`). The WSGI wrapper hands the list to the request as `ENVIRON_KEY`; gunicorn's
gthread worker calls the hook and the app on the same thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

ENVIRON_KEY = "codeactions.received_headers"
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)

_pending = threading.local()


def keep_received_headers(worker: Any, req: Any) -> None:
    """gunicorn's `pre_request` hook."""
    received = [(name, value) for name, value in req.headers]
    _pending.headers = received
    req.headers = [(name, value) for name, value in received if "_" not in name]
    worker.log.debug("%s %s", req.method, req.path)  # what gunicorn's default hook logs


class ReceivedHeaders:
    """WSGI wrapper: the list the hook kept for this thread's request, in the environ."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]):  # noqa: ANN204
        received = getattr(_pending, "headers", None)
        _pending.headers = None
        if received is not None:
            environ[ENVIRON_KEY] = received
        return self.app(environ, start_response)


def canonical_name(name: str) -> str:
    """Go's canonical header name (`x-my_header` → `X-My_header`), the form the Go service
    gave stored code and wrote into `coderuns.headers`; a name that is not an HTTP token
    is left as it is, as Go does."""
    if not name or not _TOKEN_CHARS.issuperset(name):
        return name
    out, upper = [], True
    for char in name:
        out.append(char.upper() if upper else char.lower())
        upper = char == "-"
    return "".join(out)
