"""How every process of the platform logs: JSON lines in production, readable text in dev.

One handler on the root logger, to stderr. Records carry the bound run/code ids
(`shared.observability.log_context`). The platform never logs request bodies, headers, query
parameters, results or user code's output: those may hold users' secrets.
"""

from __future__ import annotations

import logging
import sys

from shared.observability.log_context import ContextFilter
from shared.settings import Settings

TEXT_ENVIRONMENTS = {"local", "dev", "development", "test"}
# Client libraries' wire chatter drowns what matters even at debug level.
NOISY = ("amqp", "kombu", "botocore", "boto3", "urllib3", "docker", "redis", "tornado.access",
         "celery.utils.functional", "pyroute2")


class NoisyFilter(logging.Filter):
    """Drops the noisy libraries' records below INFO even where a library resets its own
    logger's level when imported (pyroute2 does: every netlink message at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO or not record.name.startswith(NOISY)


def uses_json(settings: Settings) -> bool:
    if settings.log_format != "auto":
        return settings.log_format == "json"
    return settings.environment.lower() not in TEXT_ENVIRONMENTS


def json_formatter(process: str) -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        static_fields={"process": process},
        reserved_attrs=[*_reserved_attrs(), "context"],
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )


def text_formatter() -> logging.Formatter:
    return logging.Formatter("%(asctime)s %(levelname)s %(name)s%(context)s %(message)s")


def configure_logging(settings: Settings, process: str) -> None:
    """Replace the root logger's handlers with ours; `process` names the emitting program."""
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter(process) if uses_json(settings) else text_formatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(NoisyFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(logging.INFO, level))


def _reserved_attrs() -> list[str]:
    from pythonjsonlogger.core import RESERVED_ATTRS

    return list(RESERVED_ATTRS)
