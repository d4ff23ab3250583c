"""CORS: which browser origins may call the API, and OPTIONS answered before any handler.

Every OPTIONS request to a known route is answered here, 204 with an empty body, and never
reaches a handler: a browser's preflight of `/action/endpoint/<id>` must not run the code
(nor count against its rate limit, nor need a token). The Go service (Echo's CORS
middleware) answered every OPTIONS the same way, with or without `Origin`. flask-cors then
adds the CORS headers to this answer and to every other response when the `Origin` is on
`FLOWS_CODE_ACTIONS_CORS_ALLOWED_ORIGINS`; a preflight from any other origin gets the same
204 without them, which the browser reads as a refusal.
"""

from __future__ import annotations

import re

from flask import Flask, Response, current_app, request

# Response headers a page on an allowed origin may read besides the simple ones.
EXPOSED_HEADERS = ["X-Pagination", "Location", "Retry-After", "X-CodeActions-Run-Id"]
# Seconds a browser may reuse a preflight's answer.
PREFLIGHT_MAX_AGE = 600


def install(app: Flask, allowed_origins: list[str]) -> None:
    app.before_request(_answer_options)
    if not allowed_origins:
        return
    from flask_cors import CORS

    CORS(
        app,
        origins=origins_for_flask_cors(allowed_origins),
        expose_headers=EXPOSED_HEADERS,
        max_age=PREFLIGHT_MAX_AGE,
    )


def origins_for_flask_cors(allowed: list[str]) -> str | list[str | re.Pattern[str]]:
    """`*` alone allows any origin; a `*` inside an entry matches any characters
    (`https://*.example.com`); anything else is one exact origin (case-insensitive)."""
    if "*" in allowed:
        return "*"
    return [
        re.compile("^" + re.escape(origin).replace(r"\*", ".*") + r"\Z", re.IGNORECASE)
        if "*" in origin else origin
        for origin in allowed
    ]


def _answer_options() -> Response | None:
    if request.method != "OPTIONS" or request.url_rule is None:
        return None
    allowed = allowed_methods()
    if allowed == ["OPTIONS"]:  # no method serves this path: an id that does not parse
        from shared.ids import parse_id

        for name, value in (request.view_args or {}).items():
            if name.endswith("_id"):
                parse_id(value, name)  # raises InvalidId: the same 400 a GET gets
    response = current_app.make_default_options_response()
    response.status_code = 204
    del response.headers["Content-Type"]
    response.headers["Allow"] = ", ".join(allowed)
    return response


def allowed_methods() -> list[str]:
    """The methods a request to this path would be served with (`Allow` of an OPTIONS or
    a 405): a rule whose id does not parse is not one (`/coderun/batch` is no run id, so
    it takes no GET)."""
    from werkzeug.exceptions import HTTPException

    from shared.ids import InvalidId, parse_id

    adapter = current_app.url_map.bind_to_environ(request.environ)
    allowed = {"OPTIONS"}
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        try:
            _rule, arguments = adapter.match(request.path, method=method, return_rule=True)
        except HTTPException:
            continue
        try:
            for name, value in arguments.items():
                if name.endswith("_id"):
                    parse_id(value, name)
        except InvalidId:
            continue
        allowed.add(method)
    return sorted(allowed)
