"""The run and code a log line is about, carried by context variables.

A worker thread binds them while it executes a run; an API request binds them once it knows
the run. Every log record then carries `run_id` / `code_id` (see `shared.observability.log_format`).
Only identifiers are ever bound: never bodies, headers, parameters or results.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager

FIELDS = ("run_id", "code_id")
_current: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "codeactions_log_context", default=None
)


def bind(**ids: object) -> None:
    """Add ids to the current context (until `clear` or the end of a `bound` block)."""
    values = {**(_current.get() or {}), **{k: str(v) for k, v in ids.items() if k in FIELDS and v}}
    _current.set(values)


def clear() -> None:
    _current.set({})


def current() -> dict[str, str]:
    return dict(_current.get() or {})


@contextmanager
def bound(**ids: object) -> Iterator[None]:
    token = _current.set(None)
    bind(**ids)
    try:
        yield
    finally:
        _current.reset(token)


class ContextFilter(logging.Filter):
    """Copies the bound ids onto each record (text format: as a ` run=… code=…` suffix)."""

    def filter(self, record: logging.LogRecord) -> bool:
        values = _current.get() or {}
        for name in FIELDS:
            if name in values and not hasattr(record, name):
                setattr(record, name, values[name])
        parts = [f"{name[:-3]}={getattr(record, name)}" for name in FIELDS
                 if getattr(record, name, None)]
        record.context = (" [" + " ".join(parts) + "]") if parts else ""
        return True
