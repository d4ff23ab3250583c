"""`/code`: store, list, read, change and delete code actions."""

from __future__ import annotations

from flask import request
from flask_smorest import Blueprint

from api.authorization import READ, WRITE, authorize, authorize_code
from api.context import ctx
from api.request_input import json_object_body, raw_body
from api.schemas import CodeCreateJsonSchema, CodeCreateQuerySchema, CodeListQuerySchema, CodeSchema
from shared.codes import service as code_service
from shared.codes import store as code_store
from shared.codes.service import CodeInput
from shared.errors import NotFound
from shared.ids import parse_id

blp = Blueprint("codes", __name__, description="Code actions")

FIELDS = (
    "name", "language", "type", "project_uuid", "timeout", "url", "network", "warm", "compat",
)


def _input_from_request(for_update: bool) -> CodeInput:
    """Query parameters + raw source body, or a JSON object with the same fields + source."""
    data = {name: request.args.get(name) for name in FIELDS}
    body = json_object_body()
    if body is not None and (not for_update or "source" in body or set(FIELDS) & set(body)):
        for name in (*FIELDS, "source"):
            if body.get(name) is not None:
                data[name] = body[name]
        data.setdefault("source", None)
        source = body.get("source")
        data["source"] = source if isinstance(source, str) else None
    else:
        data["source"] = raw_body()
    return CodeInput(**data)


@blp.route("/code", methods=["POST"])
@blp.route("/admin/code", methods=["POST"], endpoint="admin_create")
@blp.doc(
    requestBody={
        "description": "the raw source, or a JSON object with the fields below and `source`",
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
    data = _input_from_request(for_update=False)
    authorize(data.project_uuid, WRITE)
    return code_service.create(c.db, c.settings, data)


@blp.route("/code", methods=["GET"])
@blp.arguments(CodeListQuerySchema, location="query")
@blp.response(200, CodeSchema(many=True))
def list_codes(query: dict):
    authorize(query["project_uuid"], READ)
    with ctx().db.session() as session:
        return code_store.list_for_project(session, query["project_uuid"], query.get("code_type"))


@blp.route("/code/<code_id>", methods=["GET"])
@blp.route("/admin/code/<code_id>", methods=["GET"], endpoint="admin_get")
@blp.response(200, CodeSchema)
def get_code(code_id: str):
    with ctx().db.session() as session:
        code = code_store.get(session, parse_id(code_id, "code id"))
        if code is None:
            raise NotFound("code not found")
    authorize_code(code, READ)
    return code


@blp.route("/code/<code_id>", methods=["PATCH"])
@blp.route("/admin/code/<code_id>", methods=["PATCH"], endpoint="admin_update")
@blp.doc(requestBody={"content": {"text/plain": {"schema": {"type": "string"}}}})
@blp.arguments(CodeCreateQuerySchema, location="query", as_kwargs=True, unknown="include")
@blp.response(200, CodeSchema)
def update_code(code_id: str, **_query: object):
    authorize_code(code_id, WRITE)
    c = ctx()
    data = _input_from_request(for_update=True)
    data.language = None  # the language of stored code never changes
    data.project_uuid = None
    return code_service.update(c.db, c.settings, parse_id(code_id, "code id"), data)


@blp.route("/code/<code_id>", methods=["DELETE"])
@blp.route("/admin/code/<code_id>", methods=["DELETE"], endpoint="admin_delete")
@blp.response(204)
def delete_code(code_id: str):
    authorize_code(code_id, WRITE)
    code_service.delete(ctx().db, parse_id(code_id, "code id"))
    return ""
