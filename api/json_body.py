"""JSON request bodies: how deep they may nest.

Python's parser recurses once per level: a body nested a few thousand levels deep (a few
KiB of `[`) made a RecursionError, a 500. Bodies nested deeper than `MAX_DEPTH` are refused
as invalid JSON (400) before anything reads them; no field of the API nests past a few
levels."""

from __future__ import annotations

import json
from typing import Any

from flask.json.provider import DefaultJSONProvider

MAX_DEPTH = 64


class TooDeep(ValueError):
    pass


def loads_bounded(text: str | bytes) -> Any:
    """`json.loads`, refusing (ValueError) a document nested deeper than `MAX_DEPTH`."""
    if isinstance(text, bytes | bytearray):
        text = text.decode("utf-8")
    try:
        value = json.loads(text)
    except RecursionError:
        raise TooDeep(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise TooDeep(f"JSON nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend((item, depth + 1) for item in node.values())
        elif isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)
    return value


class BoundedJSONProvider(DefaultJSONProvider):
    """Flask's JSON, whose request bodies may not nest deeper than `MAX_DEPTH`."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads_bounded(s)
