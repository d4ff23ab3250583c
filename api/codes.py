"""`/code`: store, list, read, change and delete code actions."""

from __future__ import annotations

from flask import Response, request
from flask_smorest import Blueprint

from api.authorization import READ, WRITE, authorize, authorize_code
from api.context import ctx
from api.request_input import code_json_body, raw_body
from api.schemas import CodeCreateJsonSchema, CodeCreateQuerySchema, CodeListQuerySchema, CodeSchema
from shared.codes import service as code_service
from shared.codes.service import CodeInput
from shared.errors import InvalidInput
from shared.ids import parse_id

blp = Blueprint("codes", __name__, description="Code actions")

FIELDS = (
    "name", "language", "type", "project_uuid", "timeout", "url", "network", "warm", "mode",
    "compat",
)


def _input_from_request() -> CodeInput:
    """Query parameters + raw source body, or a JSON object with the same fields + source
    (`code_json_body` tells them apart whatever the Content-Type)."""
    data = {name: request.args.get(name) for name in FIELDS}
    body = code_json_body(FIELDS)
    if body is None:
        return CodeInput(**data, source=raw_body())
    for name in FIELDS:
        if body.get(name) is not None:
            data[name] = body[name]
    source = body.get("source")
    if source is not None and not isinstance(source, str):
        raise InvalidInput("source must be a string", field="source")
    return CodeInput(**data, source=source)


@blp.route("/code", methods=["POST"])
@blp.route("/admin/code", methods=["POST"], endpoint="admin_create")
@blp.doc(
    requestBody={
        "description": "the raw source, whatever the Content-Type, or a JSON object with "
        "the fields below and `source`",
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "application/json": {"schema": CodeCreateJsonSchema},
        },
    }
)
@blp.arguments(CodeCreateQuerySchema, location="query", as_kwargs=True, unknown="include")
@blp.response(201, CodeSchema)
def create(**_query: object):
    c = ctx()
    data = _input_from_request()
    authorize(data.project_uuid, WRITE)
    return code_service.create(c.platform, data)


@blp.route("/code", methods=["GET"])
@blp.arguments(CodeListQuerySchema, location="query")
@blp.response(200, CodeSchema(many=True))
@blp.doc(summary="A project's codes, newest first (`order=asc` for oldest first)")
def list_codes(query: dict):
    db = ctx().db
    project = code_service.project_for_listing(db, query["project_uuid"])
    authorize(project, READ)
    return code_service.list_for_project(db, project, query.get("code_type"), query["order"])


@blp.route("/code/<code_id>", methods=["GET"])
@blp.route("/admin/code/<code_id>", methods=["GET"], endpoint="admin_get")
@blp.response(200, CodeSchema)
def get_code(code_id: str):
    code = code_service.get(ctx().db, parse_id(code_id, "code id"))
    authorize_code(code, READ)
    return code


@blp.route("/code/<code_id>", methods=["PATCH"])
@blp.route("/admin/code/<code_id>", methods=["PATCH"], endpoint="admin_update")
@blp.doc(
    requestBody={
        "description": "the new raw source (empty keeps it), or a JSON object with the "
        "fields to change and/or `source`",
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "application/json": {"schema": CodeCreateJsonSchema},
        },
    }
)
@blp.arguments(CodeCreateQuerySchema, location="query", as_kwargs=True, unknown="include")
@blp.response(200, CodeSchema)
def update_code(code_id: str, **_query: object):
    authorize_code(code_id, WRITE)
    c = ctx()
    data = _input_from_request()
    data.language = None  # the language of stored code never changes
    data.project_uuid = None
    return code_service.update(c.platform, parse_id(code_id, "code id"), data)


@blp.route("/code/<code_id>", methods=["DELETE"])
@blp.route("/admin/code/<code_id>", methods=["DELETE"], endpoint="admin_delete")
@blp.response(200, description="Deleted, with its runs and logs; the body is empty (as the "
              "Go service answered)")
def delete_code(code_id: str):
    authorize_code(code_id, WRITE)
    code_service.delete(ctx().platform, parse_id(code_id, "code id"))
    response = Response(status=200)
    del response.headers["Content-Type"]
    return response
