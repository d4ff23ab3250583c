"""The Flask app factory. No app exists until `create_app` is called."""

from __future__ import annotations

from flask import Flask

from shared.platform import Platform


def create_app(platform: Platform) -> Flask:
    from api import codelibs, codelogs, coderuns, codes, cors, endpoints, health, run_submissions
    from api.authorization import install as install_authorization
    from api.context import ApiContext
    from api.errors import register_error_handlers
    from api.json_body import BoundedJSONProvider
    from api.openapi import DocumentedApi
    from api.rate_limit import CodeRateLimiter
    from shared.messaging.queue_depth import QueueDepth

    settings = platform.settings
    app = Flask("codeactions")
    app.json = BoundedJSONProvider(app)
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
    app.extensions["codeactions"] = ApiContext(
        platform=platform,
        limiter=CodeRateLimiter(
            settings.redis, settings.code_limiter_max_requests, settings.code_limiter_window
        ),
        queue_depth=QueueDepth(platform.celery),
    )
    api = DocumentedApi(app)
    for module in (health, codes, coderuns, run_submissions, codelogs, codelibs, endpoints):
        api.register_blueprint(module.blp)
    register_error_handlers(app)
    # Operations: /metrics, and no run id left over from the thread's previous request.
    from api.metrics import init_metrics
    from api.received_headers import ReceivedHeaders
    from shared.observability import log_context

    init_metrics(app, app.extensions["codeactions"])
    app.before_request(log_context.clear)
    from api.request_input import refuse_nul_in_query

    app.before_request(refuse_nul_in_query)
    # Then every OPTIONS is answered (CORS), before authentication or any handler.
    cors.install(app, settings.cors_origins)
    install_authorization(app)
    health.record_start(app)
    app.wsgi_app = ReceivedHeaders(app.wsgi_app)  # type: ignore[method-assign]
    return app
