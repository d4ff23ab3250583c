"""The JSON shape of a run, shared by the API's responses and the callbacks workers send,
so a callback receiver gets exactly what `GET /coderun/<id>` shows."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from shared.runs.model import RUN_STATUSES


class RunDocumentSchema(Schema):
    id = fields.UUID()
    mongo_object_id = fields.String(allow_none=True)
    code_id = fields.UUID()
    code_mongo_id = fields.String(allow_none=True)
    status = fields.String(validate=validate.OneOf(RUN_STATUSES))
    result = fields.String()
    extra = fields.Dict()
    params = fields.Dict()
    body = fields.String()
    headers = fields.Dict()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    queued_at = fields.DateTime(
        attribute="created_at", dump_only=True,
        metadata={"description": "when the run was queued (= created_at)"},
    )
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    worker = fields.String(allow_none=True)
    container_id = fields.String(allow_none=True)
    exit_reason = fields.String(allow_none=True)


def run_document(run: Any) -> dict[str, Any]:
    return RunDocumentSchema().dump(run)
