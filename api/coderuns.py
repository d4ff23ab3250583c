"""`/coderun`: read runs."""

from __future__ import annotations

from flask_smorest import Blueprint
from flask_smorest.pagination import PaginationParameters

from api.authorization import READ, authorize_code, authorize_code_id, authorize_run
from api.context import ctx
from api.schemas import MAX_PAGE, CodeRunListQuerySchema, CodeRunSchema, RunWaitQuerySchema
from api.sync_run import wait_for_end
from shared.errors import InvalidInput
from shared.ids import parse_id
from shared.runs import reading as run_reading

blp = Blueprint("coderuns", __name__, description="Runs of code actions")

# The seed answered one unpaginated array; a page this size keeps such clients whole.
RUNS_PAGE_SIZE = 1000


@blp.route("/coderun/<run_id>", methods=["GET"])
@blp.arguments(RunWaitQuerySchema, location="query")
@blp.response(200, CodeRunSchema)
@blp.doc(summary="One run; with wait=N (≤ 60 s) answer as soon as it ends, or after N s")
def get_run(query: dict, run_id: str):
    c = ctx()
    run = run_reading.get(c.db, parse_id(run_id, "run id"))
    authorize_run(run, READ)
    return wait_for_end(c, run, query["wait"])


@blp.route("/coderun", methods=["GET"])
@blp.arguments(CodeRunListQuerySchema, location="query")
@blp.response(200, CodeRunSchema(many=True))
@blp.paginate(page_size=RUNS_PAGE_SIZE, max_page_size=RUNS_PAGE_SIZE)
@blp.doc(summary="A code's runs, newest first (`order=asc`: oldest first); `page`/`page_size`, "
         "totals in X-Pagination")
def list_runs(query: dict, pagination_parameters: PaginationParameters):
    if pagination_parameters.page > MAX_PAGE:
        raise InvalidInput(f"page must be at most {MAX_PAGE}", field="page")
    db = ctx().db
    code, code_id = run_reading.code_of_runs(db, parse_id(query["code_id"], "code_id"))
    if code is not None:
        authorize_code(code, READ)
    else:  # runs the Go service left behind when their code was deleted
        authorize_code_id(code_id, READ)
    runs, pagination_parameters.item_count = run_reading.page_for_code(
        db, code_id, after=query.get("after"), before=query.get("before"),
        status=query.get("status"), order=query["order"],
        offset=pagination_parameters.first_item, limit=pagination_parameters.page_size,
    )
    return runs
