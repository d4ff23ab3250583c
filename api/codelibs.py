"""`/codelib`: the libraries each language's engine ships, so users know what to import."""

from __future__ import annotations

from flask_smorest import Blueprint

from api.context import ctx
from api.schemas import CodeLibQuerySchema, CodeLibSchema
from shared.codelibs import catalog

blp = Blueprint("codelibs", __name__, description="Libraries available to actions")


@blp.route("/codelib", methods=["GET"])
@blp.arguments(CodeLibQuerySchema, location="query")
@blp.response(200, CodeLibSchema(many=True))
def list_libraries(query: dict):
    return catalog.list_libraries(ctx().db, query.get("language"))
