"""`/codelib`: the libraries each language's engine ships, so users know what to import."""

from __future__ import annotations

from flask_smorest import Blueprint
from sqlalchemy import select

from api.context import ctx
from api.schemas import CodeLibQuerySchema, CodeLibSchema
from shared.codelibs.model import CodeLib

blp = Blueprint("codelibs", __name__, description="Libraries available to actions")


@blp.route("/codelib", methods=["GET"])
@blp.arguments(CodeLibQuerySchema, location="query")
@blp.response(200, CodeLibSchema(many=True))
def list_libraries(query: dict):
    statement = select(CodeLib).order_by(CodeLib.language, CodeLib.name)
    if query.get("language"):
        statement = statement.where(CodeLib.language == query["language"])
    with ctx().db.session() as session:
        return list(session.scalars(statement))
