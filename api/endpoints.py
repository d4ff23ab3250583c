"""Running code over HTTP: the public endpoints and the token-guarded `/run`."""

from __future__ import annotations

import hmac

from flask import Response, jsonify, request
from flask_smorest import Blueprint

from api.context import ctx
from api.errors import RETRY_AFTER_SECONDS, error_response
from api.schemas import RunNowSchema
from api.sync_run import run_and_wait
from shared.codes import service as code_service
from shared.errors import NotFound
from shared.ids import EntityId, parse_id
from shared.runs.model import ANSWERED
from shared.runs.statuses import PLATFORM_FAILURES, RunStatus

blp = Blueprint("endpoints", __name__, description="Run code actions")

ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
CONTENT_TYPES = {
    "json": "application/json; charset=UTF-8",
    "html": "text/html; charset=UTF-8",
    "text": "text/plain; charset=UTF-8",
}
TIMEOUT_MESSAGE = "timeout: request context timeout limit exceeded"


def _rate_limit_key(code_ref: EntityId) -> str:
    """The code's UUID: the URL's, or (an ObjectID in the URL) read from the code."""
    if code_ref.uuid is not None:
        return str(code_ref.uuid)
    code = code_service.get(ctx().db, code_ref)
    if code.type != "endpoint":  # flow codes are never public
        raise NotFound("code not found")
    return str(code.id)


def _rate_limited(code_id: str):  # noqa: ANN202
    decision = ctx().limiter.hit(code_id)
    if decision.allowed:
        return None
    response, status = error_response(429, "rate limit exceeded for this code")
    response.headers["Retry-After"] = str(decision.retry_after)
    return response, status


def _run_endpoint(code_id: str, as_text: bool):  # noqa: ANN202
    c = ctx()
    code_ref = parse_id(code_id, "code id")
    # Counted before the code is read (the run's insert reads it): an unknown code's calls
    # count against its id too, and are answered 404 while under the limit.
    limited = _rate_limited(_rate_limit_key(code_ref))
    if limited:
        return limited
    # Flow codes are never public: only an `endpoint` code runs here (404 otherwise).
    outcome = run_and_wait(c, code_ref, code_type="endpoint")
    run = outcome.run
    if outcome.abandoned:  # nobody reads this answer; nginx's "client closed request"
        return error_response(499, "client closed the request; the run was cancelled")
    if outcome.timed_out:
        return error_response(408, TIMEOUT_MESSAGE, run_id=str(run.id))
    extra = run.extra or {}
    # A legacy code that failed after setting a result answers that result, as the old engine
    # did (the run itself stays failed, with its error log); any other failure is an error.
    if run.status == RunStatus.FAILED and extra.get(ANSWERED) is not True:
        if run.exit_reason in PLATFORM_FAILURES:  # not the code's fault: worth a retry
            response, status = error_response(
                503, f"the platform could not finish the run ({run.exit_reason}); try again",
                run_id=str(run.id), error=run.result or None,
            )
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return response, status
        return error_response(
            500, "action execution failed", run_id=str(run.id), error=run.result or None
        )
    content_type = "text" if as_text else extra.get("content_type", "text")
    return Response(
        run.result,
        status=int(extra.get("status_code", 200)),
        content_type=CONTENT_TYPES.get(content_type, CONTENT_TYPES["text"]),
    )


@blp.route("/action/endpoint/<code_id>", methods=ANY_METHOD)
@blp.doc(summary="Run an endpoint code; its result is the response")
def action_endpoint(code_id: str):
    return _run_endpoint(code_id, as_text=False)


@blp.route("/endpoint/<code_id>", methods=ANY_METHOD)
@blp.doc(summary="Run an endpoint code; its result as plain text")
def endpoint(code_id: str):
    return _run_endpoint(code_id, as_text=True)


@blp.route("/run/<code_id>", methods=["POST"])
@blp.response(200, RunNowSchema)
@blp.doc(summary="Run any code now and wait for the run (static token when configured)")
def run_now(code_id: str):
    c = ctx()
    token = c.settings.auth_token
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Token {token}".encode()):
            response = jsonify({"message": "invalid or missing token"})
            response.status_code = 401
            return response
    outcome = run_and_wait(c, parse_id(code_id, "code id"))
    if outcome.abandoned:
        return error_response(499, "client closed the request; the run was cancelled")
    if outcome.timed_out:
        return error_response(408, TIMEOUT_MESSAGE, run_id=str(outcome.run.id))
    return {"code_id": str(outcome.code.id), "result": outcome.run}
