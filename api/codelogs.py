"""`/codelog`: read a run's or a code's logs, 20 a page, from the PostgreSQL index."""

from __future__ import annotations

import math

from flask_smorest import Blueprint

from api.authorization import READ, authorize_code, authorize_run
from api.context import ctx
from api.schemas import CodeLogListQuerySchema, CodeLogPageSchema, CodeLogSchema
from shared.codes import store as code_store
from shared.errors import InvalidInput, NotFound
from shared.ids import parse_id
from shared.logs import store as log_store
from shared.runs import store as run_store

blp = Blueprint("codelogs", __name__, description="Logs written by runs")


@blp.route("/codelog/<log_id>", methods=["GET"])
@blp.response(200, CodeLogSchema)
def get_log(log_id: str):
    with ctx().db.session() as session:
        entry = log_store.get(session, parse_id(log_id, "log id"))
        if entry is None:
            raise NotFound("log not found")
    authorize_code(str(entry.code_id), READ)
    return entry


@blp.route("/codelog", methods=["GET"])
@blp.arguments(CodeLogListQuerySchema, location="query")
@blp.response(200, CodeLogPageSchema)
def list_logs(query: dict):
    page = query["page"]
    with ctx().db.session() as session:
        if query.get("run_id"):
            run = run_store.get(session, parse_id(query["run_id"], "run_id"))
            if run is None:
                raise NotFound("run not found")
            authorize_run(run, READ)
            rows, total = log_store.page(session, run_id=run.id, page=page)
        elif query.get("code_id"):
            authorize_code(query["code_id"], READ)
            code_id = parse_id(query["code_id"], "code_id")
            if code_id.uuid is None:  # legacy ids are resolved once, then the index is used
                code = code_store.get(session, code_id)
                if code is None:
                    raise NotFound("code not found")
                uuid_value = code.id
            else:
                uuid_value = code_id.uuid
            rows, total = log_store.page(session, code_id=uuid_value, page=page)
        else:
            raise InvalidInput("run_id or code_id is required", field="run_id")
    last_page = max(1, math.ceil(total / log_store.PAGE_SIZE))
    return {"data": rows, "total": total, "page": page, "last_page": last_page}
