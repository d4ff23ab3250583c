"""Liveness (`/`, `/healthz`: cheap) and dependency health (`/health`: cached)."""

from __future__ import annotations

import threading
import time
from typing import Any

from flask import current_app
from flask_smorest import Blueprint

from api.context import ApiContext, ctx

blp = Blueprint("health", __name__, description="Health")

_cache_lock = threading.Lock()


@blp.route("/", methods=["GET"])
def root():
    return {"status": "ok", "service": "codeactions"}


@blp.route("/healthz", methods=["GET"])
def healthz():
    return {"status": "ok"}


def _timed(check) -> dict[str, Any]:  # noqa: ANN001
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
              "workers": lambda: _workers(c)}
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
            _cache["body"] = ({"status": "healthy" if healthy else "unhealthy", **deps},
                              200 if healthy else 503)
            _cache["at"] = time.monotonic()
        body, status = _cache["body"]
    return body, status
