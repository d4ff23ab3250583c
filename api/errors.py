"""Every error leaves the API as JSON with a human-readable `message`."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from gunicorn.http.errors import NoMoreData, ParseException
from werkzeug.exceptions import HTTPException

from api.http_server import RequestReadTimeout
from shared.errors import ServiceError
from shared.ids import InvalidId

log = logging.getLogger(__name__)


def error_response(status: int, message: str, **extra: object):  # noqa: ANN201
    body = {"message": message, **{k: v for k, v in extra.items() if v is not None}}
    return jsonify(body), status


def _validation_message(err: HTTPException) -> tuple[str, str | None]:
    """flask-smorest's 422 carries {location: {field: [errors]}}: name the first field."""
    messages = getattr(err, "data", {}).get("messages", {}) if hasattr(err, "data") else {}
    for location in messages.values():
        if isinstance(location, dict):
            for name, problems in location.items():
                problem = problems[0] if isinstance(problems, list) and problems else problems
                return f"{name}: {problem}", name
    return "invalid request", None


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ServiceError)
    def _service_error(err: ServiceError):  # noqa: ANN202
        response, status = error_response(err.status, err.message, field=err.field)
        retry_after = getattr(err, "retry_after", None)
        if retry_after is None and err.status == 503:  # every 503 says when to come back
            retry_after = RETRY_AFTER_SECONDS
        if retry_after:
            response.headers["Retry-After"] = str(retry_after)
        response.headers.update(getattr(err, "headers", {}))
        return response, status

    @app.errorhandler(InvalidId)
    def _invalid_id(err: InvalidId):  # noqa: ANN202
        from flask import request

        from api.cors import allowed_methods

        # `GET /coderun/batch` matched `/coderun/<run_id>` only for want of a better rule:
        # the path exists, for other methods.
        allowed = allowed_methods()
        if allowed != ["OPTIONS"] and request.method not in allowed:
            response, status = error_response(405, "The method is not allowed for the "
                                              "requested URL.")
            response.headers["Allow"] = ", ".join(allowed)
            return response, status
        return error_response(400, str(err))

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):  # noqa: ANN202
        if err.code == 422:
            message, field = _validation_message(err)
            return error_response(400, message, field=field)
        if err.code == 413:
            return error_response(413, "request body is too large")
        response, status = error_response(err.code or 500, err.description or err.name)
        # werkzeug's own headers: `Allow` on a 405 above all.
        for name, value in err.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        if err.code == 405:
            from api.cors import allowed_methods

            response.headers["Allow"] = ", ".join(allowed_methods())
        return response, status

    @app.errorhandler(RequestReadTimeout)
    def _read_timeout(err: RequestReadTimeout):  # noqa: ANN202
        # The body did not all arrive (api/http_server.py); nothing was stored.
        return error_response(408, str(err))

    @app.errorhandler(ParseException)
    def _malformed_body(err: ParseException):  # noqa: ANN202
        # gunicorn found the body malformed while Flask read it (a bad chunk size, say).
        return error_response(400, f"malformed request body: {err}")

    @app.errorhandler(RecursionError)
    def _too_deep(err: RecursionError):  # noqa: ANN202
        # Only a request's JSON nests without bound (webargs parses bodies with json.loads;
        # api/json_body.py bounds the rest).
        return error_response(400, "the request's JSON is nested too deeply", field="body")

    @app.errorhandler(NoMoreData)
    def _body_cut_short(err: NoMoreData):  # noqa: ANN202
        return error_response(400, "the request body ended before its announced length")

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):  # noqa: ANN202
        down = dependency_down(err)
        if down is not None:  # an outage, not a bug: the caller may retry
            log.warning("%s unavailable: %s", down, err)
            response, status = error_response(
                503, f"{down} is unavailable, try again shortly", unavailable=down
            )
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return response, status
        log.exception("unhandled error")
        return error_response(500, "internal error")


#: What a caller is told to wait during a dependency outage (services restart in seconds).
RETRY_AFTER_SECONDS = 5


def dependency_down(err: BaseException) -> str | None:
    """The name of the dependency whose outage raised `err` (None: not an outage)."""
    import kombu.exceptions
    import redis
    import sqlalchemy.exc

    if isinstance(err, sqlalchemy.exc.DBAPIError) and (
        err.connection_invalidated
        or isinstance(err, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError)
    ):
        return "PostgreSQL"
    if isinstance(err, sqlalchemy.exc.TimeoutError | sqlalchemy.exc.DisconnectionError):
        return "PostgreSQL"
    if isinstance(err, redis.ConnectionError | redis.TimeoutError | redis.BusyLoadingError):
        return "Redis"
    if isinstance(err, kombu.exceptions.OperationalError | kombu.exceptions.ConnectionError):
        return "the broker (RabbitMQ)"
    return None
