"""`/coderun`: read runs."""

from __future__ import annotations

from datetime import UTC

from flask_smorest import Blueprint
from flask_smorest.pagination import PaginationParameters

from api.authorization import READ, authorize_code, authorize_run
from api.context import ctx
from api.schemas import CodeRunListQuerySchema, CodeRunSchema, RunWaitQuerySchema
from api.sync_run import wait_for_end
from shared.codes import store as code_store
from shared.errors import NotFound
from shared.ids import parse_id
from shared.runs import store as run_store

blp = Blueprint("coderuns", __name__, description="Runs of code actions")

# The seed answered one unpaginated array; a page this size keeps such clients whole.
RUNS_PAGE_SIZE = 1000


@blp.route("/coderun/<run_id>", methods=["GET"])
@blp.arguments(RunWaitQuerySchema, location="query")
@blp.response(200, CodeRunSchema)
@blp.doc(summary="One run; with wait=N (≤ 60 s) answer as soon as it ends, or after N s")
def get_run(query: dict, run_id: str):
    c = ctx()
    with c.db.session() as session:
        run = run_store.get(session, parse_id(run_id, "run id"))
    if run is None:
        raise NotFound("run not found")
    authorize_run(run, READ)
    return wait_for_end(c, run, query["wait"])


@blp.route("/coderun", methods=["GET"])
@blp.arguments(CodeRunListQuerySchema, location="query")
@blp.response(200, CodeRunSchema(many=True))
@blp.paginate(page_size=RUNS_PAGE_SIZE, max_page_size=RUNS_PAGE_SIZE)
@blp.doc(summary="A code's runs, newest first; `page`/`page_size`, totals in X-Pagination")
def list_runs(query: dict, pagination_parameters: PaginationParameters):
    with ctx().db.session() as session:
        code = code_store.get(session, parse_id(query["code_id"], "code_id"))
        if code is None:
            raise NotFound("code not found")
        authorize_code(code, READ)
        # The seed's datetimes carry no zone: they are UTC.
        after, before = (
            value.replace(tzinfo=UTC) if value else None
            for value in (query.get("after"), query.get("before"))
        )
        filters = {"after": after, "before": before, "status": query.get("status")}
        pagination_parameters.item_count = run_store.count_for_code(session, code.id, **filters)
        return run_store.list_for_code(
            session, code.id, **filters,
            offset=pagination_parameters.first_item, limit=pagination_parameters.page_size,
        )
