"""Datetimes in query parameters (`after`/`before` of `GET /coderun`), read as leniently as
the Go service's parser (carbon) read them, with python-dateutil.

Accepted: ISO 8601 dates and date-times with `T` or a space, with or without seconds,
fractions, `Z` or an offset (`2024-01-01`, `2024-01-01 10:00:00.5+03:00`, …); the other
forms carbon took, which carry a four-digit year (`2024/01/02`, `1/2/2024` month first,
`2024-1-2 3:4:5`, RFC 1123 `Mon, 02 Jan 2006 15:04:05 GMT`); and `now`, `yesterday`,
`tomorrow` (now, minus or plus a day). A time without a zone is UTC (the Go service's host
zone). The result is always timezone-aware, in UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from dateutil.parser import isoparser
from dateutil.parser import parse as parse_loosely

_ISO_PARSERS = (isoparser(sep="T"), isoparser(sep=" "))
_FOUR_DIGIT_YEAR = re.compile(r"\d{4}")
# Missing parts of a loose form (`2024` alone) are the start of the period, as in carbon.
_LOOSE_DEFAULT = datetime(2000, 1, 1)
_RELATIVE_DAYS = {"now": 0, "yesterday": -1, "tomorrow": 1}


def parse_lenient_datetime(value: str) -> datetime:
    """The moment `value` names, in UTC; ValueError when it names none."""
    text = value.strip()
    if text.lower() in _RELATIVE_DAYS:
        return datetime.now(UTC) + timedelta(days=_RELATIVE_DAYS[text.lower()])
    moment = _iso(text) or _loose(text)
    if moment is None:
        raise ValueError(f"not a date or date-time: {value!r}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _iso(text: str) -> datetime | None:
    for parser in _ISO_PARSERS:
        try:
            return parser.isoparse(text)
        except (ValueError, OverflowError):
            continue
    return None


def _loose(text: str) -> datetime | None:
    # Without a four-digit year the loose parser would take `5` for the 5th of a month.
    if not _FOUR_DIGIT_YEAR.search(text):
        return None
    try:
        return parse_loosely(text, default=_LOOSE_DEFAULT)
    except (ValueError, OverflowError):
        return None
