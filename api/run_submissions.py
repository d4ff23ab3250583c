"""Async runs: `POST /coderun` and `POST /coderun/batch` queue runs and answer 202 at once;
`GET /coderun/<id>?wait=N` long-polls on the same completion signal as the sync path;
`POST /coderun/<id>/cancel` stops a run."""

from __future__ import annotations

from flask import url_for
from flask_smorest import Blueprint

from api.authorization import WRITE, authorize_code, authorize_run
from api.context import ApiContext, ctx
from api.schemas import ApiErrorSchema, CodeRunSchema, RunBatchSchema, RunSubmitSchema
from api.sync_run import wait_for_end
from shared.callbacks.target import check_submitted_url
from shared.codes import service as code_service
from shared.errors import InvalidInput, NotFound
from shared.ids import InvalidId, parse_id
from shared.runs import cancellation as run_cancellation
from shared.runs import submission as run_submission
from shared.runs.model import CodeRun
from shared.runs.statuses import FINISHED
from shared.storable import ensure_storable

blp = Blueprint("run_submissions", __name__, description="Queue runs without waiting")

CANCEL_WAIT_SECONDS = 3.0


def _prepared(
    c: ApiContext, items: list[dict], prefix: str = ""
) -> list[run_submission.RunRequest]:
    """Validate every item (codes exist, limits hold) before anything is created."""
    prepared = []
    for index, item in enumerate(items):
        at = f"{prefix}{index}." if prefix else ""  # a batch names the item's fields
        field = f"{at}code_id"
        for name in ("params", "body", "headers", "callback_url"):
            ensure_storable(item.get(name), f"{at}{name}")
        callback_url = item.get("callback_url")
        if callback_url is not None:
            callback_url = check_submitted_url(
                callback_url, c.settings.callback_networks, field=f"{at}callback_url"
            )
        try:
            code = code_service.get(c.db, parse_id(item["code_id"], field))
        except InvalidId as exc:
            raise InvalidInput(str(exc), field=field) from None
        except NotFound:
            raise NotFound(f"code {item['code_id']} not found", field=field) from None
        authorize_code(code, WRITE)  # running a code may have effects: moderators only
        body = item["body"]
        run_submission.check_body(body, c.settings.request_body_max_bytes)
        headers = {
            name: value if isinstance(value, list) else [value]
            for name, value in item["headers"].items()
        }
        prepared.append(run_submission.RunRequest(
            code, item["params"], body.strip(), headers, callback_url
        ))
    for language in {item.code.language for item in prepared}:
        run_submission.ensure_capacity(
            c.queue_depth, language, c.settings.worker_pool_queue_size
        )
    return prepared


def _submit(c: ApiContext, prepared: list[run_submission.RunRequest]) -> list[CodeRun]:
    return run_submission.submit(c.platform, prepared)


@blp.route("/coderun", methods=["POST"])
@blp.arguments(RunSubmitSchema)
@blp.response(202, CodeRunSchema)
@blp.doc(summary="Queue a run of any code; poll GET /coderun/<id>?wait=N for the result")
def submit_run(item: dict):
    c = ctx()
    (run,) = _submit(c, _prepared(c, [item]))
    return run, 202, {"Location": url_for("coderuns.get_run", run_id=str(run.id))}


@blp.route("/coderun/batch", methods=["POST"])
@blp.arguments(RunBatchSchema)
@blp.response(202, CodeRunSchema(many=True))
@blp.doc(summary="Queue up to 20 independent runs at once (all or none are created)")
def submit_batch(batch: dict):
    c = ctx()
    return _submit(c, _prepared(c, batch["runs"], prefix="runs."))


@blp.route("/coderun/<run_id>/cancel", methods=["POST"])
@blp.response(200, CodeRunSchema)
@blp.alt_response(202, schema=CodeRunSchema, description="still stopping")
@blp.alt_response(409, schema=ApiErrorSchema, description="the run had already ended")
@blp.doc(summary="Cancel a run: a queued run never starts, a started one is killed")
def cancel_run(run_id: str):
    authorize_run(run_id, WRITE)
    c = ctx()
    run = run_cancellation.cancel(c.platform, parse_id(run_id, "run id"))
    # The worker polls the flag a few times a second: wait briefly for the kill to land.
    run = wait_for_end(c, run, CANCEL_WAIT_SECONDS)
    return run, 200 if run.status in FINISHED else 202
