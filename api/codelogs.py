"""`/codelog`: read a run's or a code's logs, 20 a page, from the PostgreSQL index."""

from __future__ import annotations

import math

from flask_smorest import Blueprint

from api.authorization import READ, authorize_code_id, authorize_run
from api.context import ctx
from api.schemas import CodeLogListQuerySchema, CodeLogPageSchema, CodeLogSchema
from shared.errors import InvalidInput
from shared.ids import parse_id
from shared.logs import reading as log_reading
from shared.runs import reading as run_reading

blp = Blueprint("codelogs", __name__, description="Logs written by runs")


@blp.route("/codelog/<log_id>", methods=["GET"])
@blp.response(200, CodeLogSchema)
def get_log(log_id: str):
    entry = log_reading.get(ctx().db, parse_id(log_id, "log id"))
    authorize_code_id(entry.code_id, READ)
    return entry


@blp.route("/codelog", methods=["GET"])
@blp.arguments(CodeLogListQuerySchema, location="query")
@blp.response(200, CodeLogPageSchema)
@blp.doc(summary="A run's or a code's logs, 20 a page, newest first (`order=asc`: oldest first)")
def list_logs(query: dict):
    page, order, db = query["page"], query["order"], ctx().db
    if query.get("run_id"):
        run = run_reading.get(db, parse_id(query["run_id"], "run_id"))
        authorize_run(run, READ)
        rows, total = log_reading.page_for_run(db, run.id, page, order)
    elif query.get("code_id"):
        # Legacy ids are resolved once, then the index is used; a deleted code's adopted
        # runs still have their logs.
        code_id = parse_id(query["code_id"], "code_id")
        uuid_value = code_id.uuid or run_reading.code_of_runs(db, code_id)[1]
        authorize_code_id(uuid_value, READ)
        rows, total = log_reading.page_for_code(db, uuid_value, page, order)
    else:
        raise InvalidInput("run_id or code_id is required", field="run_id")
    # 0 when there are none, as the Go service answered (clients loop up to it).
    last_page = math.ceil(total / log_reading.PAGE_SIZE)
    return {"data": rows, "total": total, "page": page, "last_page": last_page}
