"""Reading what a caller sent: query parameters, raw bodies, JSON bodies, headers."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from flask import request

from api.json_body import TooDeep, loads_bounded
from api.received_headers import ENVIRON_KEY, canonical_name
from shared.errors import InvalidInput
from shared.storable import ensure_storable


def raw_body() -> str:
    """The request body as text; bytes that are not UTF-8 are replaced, never a 500."""
    return request.get_data(cache=True, as_text=False).decode("utf-8", errors="replace")


def code_json_body(fields: Collection[str]) -> dict[str, Any] | None:
    """The body as the JSON form of a code, else None (the body is then the raw source).

    Whatever the Content-Type (the Go service's clients send Python source as
    `application/json`): a JSON object with a `source` field is the JSON form; so is one
    declared JSON whose every key is one of `fields` (a PATCH of the name alone, say), which
    no real source is. Anything else, invalid JSON included, is source."""
    text = raw_body()
    if not text.lstrip().startswith("{"):
        return None
    try:
        value = loads_bounded(text)
    except TooDeep as exc:  # valid JSON nobody's source is: refused rather than stored
        raise InvalidInput(str(exc), field="body") from None
    except ValueError:
        return None
    if not isinstance(value, dict) or not value:
        return None
    if "source" in value:
        return value
    if request.mimetype == "application/json" and set(value) <= set(fields):
        return value
    return None


def first_query_values() -> dict[str, str]:
    """Only the first value of a repeated query key is kept (SPEC.md)."""
    return {key: request.args.getlist(key)[0] for key in request.args.keys()}


def header_lists() -> dict[str, list[str]]:
    """Every request header with all its values, in the order received (a repeated header
    stays two values), names in Go's canonical form as the Go service stored them.

    Under gunicorn the headers come as received (api/received_headers.py), names with `_`
    included; under another WSGI server they come from the environ, where a repeated header
    is one joined value and `_` names are lost."""
    received = request.environ.get(ENVIRON_KEY)
    pairs = received if received is not None else request.headers.items()
    headers: dict[str, list[str]] = {}
    for name, value in pairs:
        headers.setdefault(canonical_name(name), []).append(value)
    return headers


def refuse_nul_in_query() -> None:
    """`before_request`: a query key or value with a NUL character is a 400 naming it, on
    every route (PostgreSQL stores no NUL, shared/storable.py; a query may be stored as a
    run's params or be looked up)."""
    for key, values in request.args.lists():
        ensure_storable(key, "query")  # a key itself is to blame: no other name for it
        for value in values:
            ensure_storable(value, key)
