"""The Flask app factory. No app exists until `create_app` is called."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

from shared.settings import Settings, load_settings


def create_app(settings: Settings | None = None) -> Flask:
    import redis

    from api import codelibs, codelogs, coderuns, codes, endpoints, health, run_submissions
    from api.authorization import install as install_authorization
    from api.context import ApiContext
    from api.errors import register_error_handlers
    from api.rate_limit import CodeRateLimiter
    from shared.db import Database
    from shared.logs.archive import LogArchive
    from shared.messaging.celery_app import make_celery
    from shared.messaging.queue_depth import QueueDepth

    settings = settings or load_settings()
    app = Flask("codeactions")
    app.config.update(
        API_TITLE="Code Actions",
        API_VERSION="1.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL="https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
        # A hard guard only; each route checks its own limit and names it (a JSON-escaped
        # source may be up to twice its size).
        MAX_CONTENT_LENGTH=max(2 * settings.source_max_bytes, settings.request_body_max_bytes)
        + 64 * 1024,
        JSON_SORT_KEYS=False,
    )
    celery = make_celery(settings)
    app.extensions["codeactions"] = ApiContext(
        settings=settings,
        db=Database(settings),
        redis=redis.Redis.from_url(settings.redis, socket_timeout=5, health_check_interval=30),
        celery=celery,
        limiter=CodeRateLimiter(
            settings.redis, settings.code_limiter_max_requests, settings.code_limiter_window
        ),
        archive=LogArchive(settings),
        queue_depth=QueueDepth(celery),
    )
    api = Api(app)
    for module in (health, codes, coderuns, run_submissions, codelogs, codelibs, endpoints):
        api.register_blueprint(module.blp)
    register_error_handlers(app)
    install_authorization(app)
    # Operations: /metrics, and no run id left over from the thread's previous request.
    from api.metrics import init_metrics
    from shared.observability import log_context

    init_metrics(app, app.extensions["codeactions"])
    app.before_request(log_context.clear)
    return app
