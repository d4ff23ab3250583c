"""Liveness (`/`, `/healthz`: cheap) and dependency health (`/health`: cached).

Both keep the Go service's bodies, which monitors parse: `/healthz` is `{status, timestamp,
uptime, version}` (`uptime` in nanoseconds, as Go encoded a duration), and `/health` has
`services.<name>.status` (`healthy` | `unhealthy`) and `system` beside our own entries.
"""

from __future__ import annotations

import functools
import os
import platform
import threading
import time
from datetime import UTC, datetime
from typing import Any

from flask import Flask, current_app
from flask_smorest import Blueprint

from api.context import ApiContext, ctx

blp = Blueprint("health", __name__, description="Health")

_cache_lock = threading.Lock()
STARTED = "codeactions.started"
# Our check → its name in the Go service's `services` object (it had no S3 or worker check;
# its `mongodb` has no counterpart: the database is PostgreSQL).
SERVICE_NAMES = {"database": "postgres", "redis": "redis", "broker": "rabbitmq", "s3": "s3",
                 "workers": "workers"}


def record_start(app: Flask) -> None:
    app.extensions[STARTED] = time.monotonic()


@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("codeactions")
    except PackageNotFoundError:
        return "unknown"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _liveness() -> dict[str, Any]:
    uptime = time.monotonic() - current_app.extensions[STARTED]
    return {"status": "ok", "timestamp": _now(), "uptime": int(uptime * 1e9),
            "uptime_seconds": round(uptime, 3), "version": _version()}


@blp.route("/", methods=["GET"])
def root():
    return {**_liveness(), "service": "codeactions"}


@blp.route("/healthz", methods=["GET"])
def healthz():
    return _liveness()


def _timed(check) -> dict[str, Any]:  # noqa: ANN001
    checked_at = _now()
    started = time.perf_counter()
    details: Any = None
    try:
        details = check()
        status, error = "up", None
    except Exception as exc:
        status, error = "down", str(exc)[:300]
        details = getattr(exc, "details", None)
    result: dict[str, Any] = {
        "status": status,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        "checked_at": checked_at,
    }
    if isinstance(details, dict):
        result.update(details)
    if error:
        result["error"] = error
    return result


class NoLiveWorker(Exception):
    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details


def _workers(c: ApiContext) -> dict[str, Any]:
    """At least one live worker per language queue (heartbeats in Redis)."""
    from shared.messaging.tasks import run_queue
    from shared.observability import worker_registry

    languages = [x.strip() for x in c.settings.health_worker_languages.split(",") if x.strip()]
    live = {
        run_queue(language): len(
            worker_registry.live(c.redis, language, c.settings.worker_heartbeat_ttl)
        )
        for language in languages
    }
    missing = [queue for queue, count in live.items() if count == 0]
    if missing:
        raise NoLiveWorker(f"no live worker for {', '.join(missing)}", {"queues": live})
    return {"queues": live}


def _docker(c: ApiContext) -> dict[str, Any]:
    """Each language has a live worker whose Docker engine answers (from their heartbeats)."""
    from shared.observability import worker_registry

    languages = [x.strip() for x in c.settings.health_worker_languages.split(",") if x.strip()]
    answering = {
        language: sum(
            w.docker_ok
            for w in worker_registry.live(c.redis, language, c.settings.worker_heartbeat_ttl)
        )
        for language in languages
    }
    lacking = [language for language, count in answering.items() if count == 0]
    if lacking:
        raise NoLiveWorker(f"no worker with a working Docker for {', '.join(lacking)}",
                           {"workers_with_docker": answering})
    return {"workers_with_docker": answering}


def _check_all(c: ApiContext) -> dict[str, Any]:
    from sqlalchemy import text

    def database() -> None:
        with c.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def broker() -> None:
        with c.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

    def s3() -> None:
        if c.settings.s3_enabled:
            c.archive.ping()

    checks = {"database": database, "redis": c.redis.ping, "broker": broker, "s3": s3,
              "workers": lambda: _workers(c), "docker": lambda: _docker(c)}
    return {name: _timed(check) for name, check in checks.items()}


@blp.route("/health", methods=["GET"])
def health():
    c = ctx()
    _cache = current_app.extensions.setdefault("codeactions.health", {"at": 0.0, "body": None})
    with _cache_lock:
        if _cache["body"] is None or time.monotonic() - _cache["at"] > (
            c.settings.health_check_cache_time
        ):
            deps = _check_all(c)
            healthy = all(dep["status"] == "up" for dep in deps.values())
            body = {**_liveness(), "status": "healthy" if healthy else "unhealthy", **deps,
                    "services": _services(deps), "system": _system()}
            _cache["body"] = (body, 200 if healthy else 503)
            _cache["at"] = time.monotonic()
        body, status = _cache["body"]
    return body, status


def _services(deps: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The Go service's shape: `{name: {status, message, latency (ns), timestamp}}`."""
    return {
        SERVICE_NAMES.get(name, name): {
            "status": "healthy" if dep["status"] == "up" else "unhealthy",
            "message": dep.get("error", "ok"),
            "latency": int(dep["latency_ms"] * 1e6),
            "timestamp": dep["checked_at"],
        }
        for name, dep in deps.items()
    }


def _system() -> dict[str, Any]:
    return {"python_version": platform.python_version(), "num_threads": threading.active_count(),
            "memory_usage": _resident_memory(), "cpu_count": os.cpu_count()}


def _resident_memory() -> str:
    try:
        with open("/proc/self/statm") as statm:
            resident = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return "unknown"
    return f"{resident / (1024 * 1024):.1f} MB"
