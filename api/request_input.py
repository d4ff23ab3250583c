"""Reading what a caller sent: query parameters, raw bodies, JSON bodies, headers."""

from __future__ import annotations

import json
from typing import Any

from flask import request

from shared.errors import InvalidInput


def raw_body() -> str:
    """The request body as text; bytes that are not UTF-8 are replaced, never a 500."""
    return request.get_data(cache=True, as_text=False).decode("utf-8", errors="replace")


def json_object_body() -> dict[str, Any] | None:
    """The body as a JSON object when the caller says it is JSON, else None."""
    if not request.mimetype or request.mimetype != "application/json":
        return None
    text = raw_body()
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"body is not valid JSON: {exc.msg}", field="body") from None
    if not isinstance(value, dict):
        raise InvalidInput("JSON body must be an object", field="body")
    return value


def first_query_values() -> dict[str, str]:
    """Only the first value of a repeated query key is kept (SPEC.md)."""
    return {key: request.args.getlist(key)[0] for key in request.args.keys()}


def header_lists() -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers.setdefault(name, []).append(value)
    return headers
