"""Request and response shapes (marshmallow), which also make the OpenAPI document."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate

from api.lenient_datetime import parse_lenient_datetime
from shared.codes.model import CODE_MODES, CODE_TYPES, COMPAT_MODES, TIMEOUT_MAX, TIMEOUT_MIN
from shared.logs.model import LOG_TYPES
from shared.runs.document import RunDocumentSchema
from shared.runs.statuses import RunStatus
from shared.settings import LANGUAGES


class CodeSchema(Schema):
    id = fields.UUID()
    mongo_object_id = fields.String(allow_none=True)
    name = fields.String()
    type = fields.String(validate=validate.OneOf(CODE_TYPES))
    source = fields.String()
    language = fields.String(validate=validate.OneOf(LANGUAGES))
    url = fields.String(allow_none=True)
    project_uuid = fields.UUID()
    timeout = fields.Integer()
    network = fields.Boolean()
    warm = fields.Boolean()
    mode = fields.String(validate=validate.OneOf(CODE_MODES))
    compat = fields.String(validate=validate.OneOf(COMPAT_MODES))
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class CodeCreateQuerySchema(Schema):
    """Query parameters of `POST /code`; the raw request body is the source."""

    name = fields.String(metadata={"description": "display name, ≤255 characters"})
    language = fields.String(metadata={"description": ", ".join(LANGUAGES)})
    type = fields.String(metadata={"description": ", ".join(CODE_TYPES)})
    project_uuid = fields.String()
    timeout = fields.Integer(
        metadata={"description": f"seconds, {TIMEOUT_MIN}–{TIMEOUT_MAX}, default 60"}
    )
    url = fields.String()
    network = fields.String(
        metadata={"description": "false turns outbound networking off (default true)"}
    )
    warm = fields.String(
        metadata={"description": "alias of mode: true = warm, false = pool"}
    )
    mode = fields.String(
        metadata={"description": "pool (a fresh container per run), warm (a container bound "
                  "to the code, a fresh process per run) or resident (a container bound to the "
                  "code whose process stays between runs, module state kept); "
                  "default FLOWS_CODE_ACTIONS_DEFAULT_MODE"}
    )
    compat = fields.String(
        metadata={"description": "strict (default) or legacy: the Go service's engine leniency"}
    )


class CodeCreateJsonSchema(CodeCreateQuerySchema):
    source = fields.String()


ORDERS = ("desc", "asc")
#: The largest page a listing takes: beyond it the offset would leave PostgreSQL's bigint.
MAX_PAGE = 1_000_000


def _order(what: str) -> fields.String:
    return fields.String(
        load_default="desc", validate=validate.OneOf(ORDERS),
        metadata={"description": f"desc (default): {what} newest first; asc: oldest first"},
    )


class LenientDateTime(fields.String):
    """A datetime in any form `api.lenient_datetime` reads; UTC when it names no zone."""

    default_error_messages = {"invalid": "not a date or date-time: {input!r}"}

    def _deserialize(self, value, attr, data, **kwargs):  # noqa: ANN001, ANN202
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return parse_lenient_datetime(text)
        except ValueError:
            raise self.make_error("invalid", input=text) from None


class CodeListQuerySchema(Schema):
    project_uuid = fields.String(
        required=True,
        metadata={"description": "a UUID, or a project id of the Go service that was not one"},
    )
    code_type = fields.String(validate=validate.OneOf(CODE_TYPES))
    order = _order("codes")


class CallbackAttemptSchema(Schema):
    attempt = fields.Integer()
    at = fields.String(metadata={"description": "ISO 8601 time of the attempt"})
    status_code = fields.Integer(allow_none=True)
    error = fields.String(allow_none=True)
    duration_ms = fields.Integer()


class RunCallbackSchema(Schema):
    url = fields.String()
    status = fields.String(validate=validate.OneOf(("pending", "delivered", "failed")))
    attempts = fields.List(fields.Nested(CallbackAttemptSchema))


class CodeRunSchema(RunDocumentSchema):
    callback = fields.Nested(RunCallbackSchema, allow_none=True)


_WHEN = (
    "ISO 8601 date or date-time (`T` or a space; fractions, `Z` or an offset allowed; UTC "
    "when no zone), or another form the Go service took (`2024/01/02`, RFC 1123, `yesterday`)"
)


class CodeRunListQuerySchema(Schema):
    code_id = fields.String(required=True)
    after = LenientDateTime(metadata={"description": "runs created at or after: " + _WHEN})
    before = LenientDateTime(metadata={"description": "runs created at or before: " + _WHEN})
    status = fields.String(validate=validate.OneOf([status.value for status in RunStatus]))
    order = _order("runs")


class RunNowSchema(Schema):
    code_id = fields.String()
    result = fields.Nested(CodeRunSchema)


class CodeLogSchema(Schema):
    id = fields.UUID()
    mongo_object_id = fields.String(allow_none=True)
    run_id = fields.UUID()
    code_id = fields.UUID()
    type = fields.String(validate=validate.OneOf(LOG_TYPES))
    content = fields.String()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class CodeLogListQuerySchema(Schema):
    run_id = fields.String()
    code_id = fields.String()
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    order = _order("logs")


class CodeLogPageSchema(Schema):
    data = fields.List(fields.Nested(CodeLogSchema))
    total = fields.Integer()
    page = fields.Integer()
    last_page = fields.Integer()


class ApiErrorSchema(Schema):
    message = fields.String()
    field = fields.String()


class CodeLibSchema(Schema):
    name = fields.String()
    language = fields.String(validate=validate.OneOf(LANGUAGES))
    version = fields.String(
        allow_none=True, metadata={"description": "the version the engine image has"}
    )
    modules = fields.List(
        fields.String(), allow_none=True,
        metadata={"description": "what to import (e.g. bs4 for beautifulsoup4)"},
    )


class CodeLibQuerySchema(Schema):
    language = fields.String(validate=validate.OneOf(LANGUAGES))


def _string_or_strings(value: object) -> None:
    if isinstance(value, str):
        return
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return
    raise ValidationError("must be a string or a list of strings")


class RunSubmitSchema(Schema):
    """One run to queue: what the sync call would have taken from the HTTP request."""

    code_id = fields.String(required=True)
    params = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    body = fields.String(load_default="")
    headers = fields.Dict(
        keys=fields.String(), values=fields.Raw(validate=_string_or_strings), load_default=dict
    )
    callback_url = fields.String(load_default=None, allow_none=True)


class RunBatchSchema(Schema):
    runs = fields.List(
        fields.Nested(RunSubmitSchema), required=True, validate=validate.Length(min=1, max=20)
    )


class RunWaitQuerySchema(Schema):
    wait = fields.Float(load_default=0, validate=validate.Range(min=0, max=60))
