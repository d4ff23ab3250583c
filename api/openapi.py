"""`/openapi.json` as the server really answers.

flask-smorest documents what the marshmallow schemas say; the rest is written here, once,
over the generated document: the real error body (`{"message", "field"}`, never the 422
flask-smorest assumes: validation errors are 400), every error status a route can give,
the routes no blueprint declares (`/metrics`, `/openapi.json`, `/docs`, `OPTIONS`), the
success bodies of `/` and `/health`, the action endpoints' own content types, `X-Pagination`
as the JSON string it is, and the ids paths take. tests/integration/test_fuzz.py holds the
server to it with Schemathesis; tests/integration/test_openapi.py validates it.
"""

from __future__ import annotations

import copy
from typing import Any

from flask_smorest import Api

from api.schemas import MAX_PAGE
from shared.codes.model import CODE_TYPES, COMPAT_MODES, TIMEOUT_MAX, TIMEOUT_MIN
from shared.settings import LANGUAGES

#: A path id: a UUID (hyphenated, as the API writes them) or a MongoDB-era ObjectID.
ID_PATTERN = (
    r"^([0-9a-fA-F]{24}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}"
    r"-[0-9a-fA-F]{12})$"
)
UUID_PATTERN = (
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
BOOLEAN_WORDS = ["true", "false", "1", "0", "yes", "no", "on", "off"]

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["message"],
    "properties": {
        "message": {"type": "string", "description": "what went wrong, for a human"},
        "field": {"type": "string", "description": "the input to blame, when one is"},
        "run_id": {"type": "string", "description": "the run concerned (408, 500, 503 of "
                   "a sync call)"},
        "error": {"type": "string", "description": "a failed run's error (500, 503)"},
        "unavailable": {"type": "string", "description": "the dependency that is down (503)"},
    },
}

_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again",
                                "schema": {"type": "string"}}}
_ALLOW = {"Allow": {"description": "the methods the path takes",
                    "schema": {"type": "string"}}}

#: Status → (name, description, headers) of every error the API answers.
ERRORS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "400": ("BAD_REQUEST", "Invalid input (`field` names it): a malformed or out-of-range "
            "value, a NUL character in anything stored, malformed JSON or request body", {}),
    "401": ("UNAUTHORIZED", "Authentication is required and missing or invalid", {}),
    "403": ("FORBIDDEN", "The caller may not do this", {}),
    "404": ("NOT_FOUND", "No such code, run, log or route", {}),
    "405": ("METHOD_NOT_ALLOWED", "The path does not take this method", _ALLOW),
    "408": ("REQUEST_TIMEOUT", "The request did not arrive within the read timeout; or, "
            "on a sync call, the run did not end within the code's timeout (`run_id`)", {}),
    "409": ("CONFLICT", "The run had already ended", {}),
    "410": ("GONE", "The code was deleted while its run was waiting", {}),
    "413": ("PAYLOAD_TOO_LARGE", "The request body or the source is too large", {}),
    "414": ("URI_TOO_LONG", "The request line is too long", {}),
    "429": ("TOO_MANY_REQUESTS", "The code's rate limit is reached", _RETRY_AFTER),
    "431": ("HEADERS_TOO_LARGE", "The request headers are too large", {}),
    "499": ("CLIENT_CLOSED", "The caller went away; the run was cancelled", {}),
    "500": ("RUN_FAILED", "The code's run failed (`run_id`, `error`)", {}),
    "503": ("UNAVAILABLE", "A dependency is down or the platform is saturated (or could not "
            "finish a run): try again after Retry-After", _RETRY_AFTER),
}
#: What any request may get, whatever the route.
COMMON_ERRORS = ("400", "401", "403", "404", "408", "413", "414", "431", "503")
#: What a call that runs code and waits for it may get besides.
SYNC_RUN_ERRORS = ("410", "499")
ENDPOINT_ERRORS = ("429", "500")

LIVENESS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "timestamp", "uptime", "version"],
    "properties": {
        "status": {"type": "string"},
        "timestamp": {"type": "string"},
        "uptime": {"type": "integer", "description": "nanoseconds (the Go service's form)"},
        "uptime_seconds": {"type": "number"},
        "version": {"type": "string"},
        "service": {"type": "string"},
    },
}
HEALTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "services"],
    "properties": {
        **LIVENESS_SCHEMA["properties"],
        "status": {"type": "string", "enum": ["healthy", "unhealthy"]},
        "services": {"type": "object", "additionalProperties": {
            "type": "object",
            "properties": {"status": {"type": "string", "enum": ["healthy", "unhealthy"]},
                           "message": {"type": "string"}, "latency": {"type": "integer"},
                           "timestamp": {"type": "string"}},
        }},
        "system": {"type": "object"},
    },
    "additionalProperties": {"type": "object", "description": "one dependency's check"},
}

ENDPOINT_CONTENT = {
    "application/json": {"schema": {}},
    "text/html": {"schema": {"type": "string"}},
    "text/plain": {"schema": {"type": "string"}},
}


class DocumentedApi(Api):
    """flask-smorest's Api whose `/openapi.json` is completed by `complete`."""

    def _openapi_json(self):  # noqa: ANN202 - flask-smorest's view
        import flask

        return flask.current_app.response_class(
            flask.json.dumps(complete(self.spec.to_dict()), indent=2, sort_keys=False),
            mimetype="application/json",
        )


def complete(generated: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(generated)
    components = spec.setdefault("components", {})
    components.setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    if "ApiError" in components["schemas"]:  # api/schemas.py's name for the same body
        components["schemas"]["ApiError"] = ERROR_SCHEMA
    responses = components.setdefault("responses", {})
    responses.pop("UNPROCESSABLE_ENTITY", None)
    for name, description, headers in ERRORS.values():
        responses[name] = {"description": description, "content": _ERROR_CONTENT,
                           **({"headers": headers} if headers else {})}
    components.setdefault("headers", {})["PAGINATION"] = {
        "description": "a JSON object (as a string): total, total_pages, first_page, "
        "last_page, page, previous_page, next_page",
        "schema": {"type": "string"},
    }
    _code_create_json(components["schemas"].get("CodeCreateJson"))
    _run_submit(components["schemas"].get("RunSubmit"))
    paths = spec.setdefault("paths", {})
    for path, item in paths.items():
        _path_item(path, item)
    paths.update(_undeclared_routes())
    for item in paths.values():
        _options(item)
    _drop_nulls(spec)
    return spec


def _ref(status: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{ERRORS[status][0]}"}


def _path_item(path: str, item: dict[str, Any]) -> None:
    for parameter in item.get("parameters", []):
        if parameter.get("in") == "path" and parameter["name"].endswith("_id"):
            parameter["schema"] = {"type": "string", "pattern": ID_PATTERN}
            parameter["description"] = "a UUID, or the 24-hex id of a MongoDB-era record"
    endpoint = path.startswith(("/action/endpoint/", "/endpoint/"))
    for method, operation in item.items():
        if method == "parameters":
            continue
        operation_responses = operation.setdefault("responses", {})
        operation_responses.pop("422", None)
        extra: tuple[str, ...] = ()
        if endpoint or path.startswith("/run/"):
            extra = SYNC_RUN_ERRORS + (ENDPOINT_ERRORS if endpoint else ("500",))
        for status in COMMON_ERRORS + extra:
            operation_responses.setdefault(status, _ref(status))
        if endpoint:
            _endpoint_operation(method, operation)
        if method == "patch" and path.endswith("/code/{code_id}"):
            # A stored code's language and project never change: PATCH ignores them.
            operation["parameters"] = [
                parameter for parameter in operation.get("parameters", [])
                if parameter.get("name") not in ("language", "project_uuid")
            ]
        for parameter in operation.get("parameters", []):
            _query_parameter(path, parameter)
    if path in ("/", "/healthz"):
        item["get"]["responses"]["200"] = _json_ok("alive", LIVENESS_SCHEMA)
    if path == "/health":
        health = item["get"]["responses"]
        health["200"] = _json_ok("every dependency is up", HEALTH_SCHEMA)
        health["503"] = _json_ok("a dependency is down (same body)", HEALTH_SCHEMA)


def _json_ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _endpoint_operation(method: str, operation: dict[str, Any]) -> None:
    """The code's own answer: its status, content type and body."""
    responses = operation["responses"]
    if method == "options":
        operation.clear()
        _options({}, into=operation)
        return
    if method == "head":
        responses["200"] = {"description": "the code's answer, without its body"}
        return
    responses["200"] = {
        "description": "the code's answer: the status, content type (JSON, HTML or text) "
        "and body it set (`/endpoint/...`: always text/plain)",
        "content": ENDPOINT_CONTENT,
    }
    responses["default"] = {
        "description": "any other status the code set, with its body; or an error",
        "content": {**ENDPOINT_CONTENT, **_ERROR_CONTENT},
    }
    operation["requestBody"] = {
        "description": "passed to the code as its request body (≤ the body limit, no NUL)",
        "required": False,
        "content": {"*/*": {"schema": {}}},
    }


def _query_parameter(path: str, parameter: dict[str, Any]) -> None:
    if parameter.get("in") != "query":
        return
    schema = parameter.setdefault("schema", {})
    name = parameter["name"]
    if name == "page":
        schema["maximum"] = MAX_PAGE
    elif name in ("after", "before"):
        schema["format"] = "date-time"
        schema.pop("pattern", None)
    elif name in ("code_id", "run_id"):
        schema.update(pattern=ID_PATTERN)
    elif name == "project_uuid":
        schema.update(pattern=UUID_PATTERN)
    if path.endswith(("/code", "/code/{code_id}")):
        # `language`, `type` and `project_uuid` are needed on create, from the query or
        # from the JSON form of the body (whose values win): OpenAPI 3.0 cannot say "in
        # one of the two", so neither is marked required.
        _code_field(name, schema)


def _code_field(name: str, schema: dict[str, Any]) -> None:
    if name == "language":
        schema["enum"] = list(LANGUAGES)
    elif name in ("type", "code_type"):
        schema["enum"] = list(CODE_TYPES)
    elif name == "compat":
        schema["enum"] = list(COMPAT_MODES)
    elif name in ("network", "warm"):
        schema["enum"] = BOOLEAN_WORDS
    elif name == "timeout":
        schema.update(minimum=TIMEOUT_MIN, maximum=TIMEOUT_MAX)
    elif name == "name":
        schema["maxLength"] = 255
    elif name == "url":
        schema["maxLength"] = 512


def _code_create_json(schema: dict[str, Any] | None) -> None:
    if schema is None:
        return
    properties = schema.setdefault("properties", {})
    for name, field in properties.items():
        _code_field(name, field)
        if name == "project_uuid":
            field["pattern"] = UUID_PATTERN
    for name in ("network", "warm"):
        if name in properties:
            properties[name] = {"type": "boolean"}
    if "timeout" in properties:
        properties["timeout"]["type"] = "integer"
    schema["required"] = ["source"]


def _run_submit(schema: dict[str, Any] | None) -> None:
    if schema is None:
        return
    properties = schema.setdefault("properties", {})
    properties["code_id"] = {"type": "string", "pattern": ID_PATTERN}
    properties["headers"] = {
        "type": "object",
        "description": "header name → a value or a list of values, passed to the code",
        "additionalProperties": {"oneOf": [
            {"type": "string"}, {"type": "array", "items": {"type": "string"}},
        ]},
    }
    properties["callback_url"] = {
        "type": "string", "nullable": True,
        "description": "http(s) URL on an allowed network (…_CALLBACK_ALLOWED_NETWORKS)",
    }


def _undeclared_routes() -> dict[str, Any]:
    def get(description: str, content_type: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"get": {
            "summary": description,
            "responses": {
                "200": {"description": "OK", "content": {content_type: {"schema": schema}}},
                **{status: _ref(status) for status in COMMON_ERRORS},
            },
        }}

    return {
        "/metrics": get("Prometheus metrics (text exposition format)",
                        "text/plain", {"type": "string"}),
        "/openapi.json": get("This document", "application/json", {"type": "object"}),
        "/docs": get("Swagger UI over this document", "text/html", {"type": "string"}),
    }


def _options(item: dict[str, Any], into: dict[str, Any] | None = None) -> None:
    """Every known path answers OPTIONS (api/cors.py): 204 and `Allow`, never a handler;
    400 for an id that does not parse."""
    operation = {
        "summary": "The path's methods (CORS preflight); never runs anything",
        "responses": {"204": {"description": "the path's methods", "headers": _ALLOW},
                      **{status: _ref(status) for status in ("400", "404", "414", "431")}},
    }
    if into is not None:
        into.update(operation)
    else:
        item.setdefault("options", operation)


def _drop_nulls(node: Any) -> None:
    """A `null` keyword (`format: null`) makes the document invalid."""
    if isinstance(node, dict):
        for key in [key for key, value in node.items() if value is None]:
            del node[key]
        for value in node.values():
            _drop_nulls(value)
    elif isinstance(node, list):
        for value in node:
            _drop_nulls(value)
