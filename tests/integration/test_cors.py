"""CORS over real HTTP (the session API allows `https://app.example.com` and
`https://*.partner.example`): a browser's preflight is answered by the CORS layer and never
runs the code, whatever its origin; responses to allowed origins carry the headers."""

from __future__ import annotations

import uuid

import pytest
import requests
from sqlalchemy import func, select

from shared.runs.model import CodeRun
from tests.integration.helpers import call, create_code

ALLOWED = "https://app.example.com"
SOURCE = "def Run(engine):\n    engine.result.set({'ran': True}, content_type='json')\n"


def _runs(db, code_id: str) -> int:  # noqa: ANN001
    with db.session() as session:
        return session.scalar(
            select(func.count()).select_from(CodeRun).where(CodeRun.code_id == uuid.UUID(code_id))
        )


def _preflight(platform, path: str, origin: str | None, method: str = "POST"):  # noqa: ANN001, ANN202
    headers = {"Access-Control-Request-Method": method,
               "Access-Control-Request-Headers": "content-type, x-custom"}
    if origin:
        headers["Origin"] = origin
    return requests.options(platform.url(path), headers=headers, timeout=10)


@pytest.mark.parametrize("route", ["/action/endpoint/{id}", "/endpoint/{id}"])
def test_a_preflight_from_an_allowed_origin_is_answered_and_runs_nothing(platform, db, route):
    code = create_code(platform, SOURCE)
    response = _preflight(platform, route.format(id=code["id"]), ALLOWED)
    assert response.status_code == 204 and response.content == b""
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    allowed_headers = response.headers["Access-Control-Allow-Headers"].lower()
    assert "content-type" in allowed_headers and "x-custom" in allowed_headers
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    assert _runs(db, code["id"]) == 0


@pytest.mark.parametrize("origin", ["https://evil.example", "https://app.example.com.evil.net",
                                    "https://partner.example.evil.net"])
def test_a_preflight_from_another_origin_gets_no_cors_headers_and_runs_nothing(
    platform, db, origin
):
    code = create_code(platform, SOURCE)
    response = _preflight(platform, f"/action/endpoint/{code['id']}", origin)
    # 204 as the Go service answered, but nothing a browser would accept as a permission.
    assert response.status_code == 204 and response.content == b""
    assert not any(name.lower().startswith("access-control-") for name in response.headers)
    assert _runs(db, code["id"]) == 0


def test_a_plain_options_runs_nothing_either(platform, db):
    """The Go service's CORS layer answered every OPTIONS itself, preflight or not."""
    code = create_code(platform, SOURCE)
    response = requests.options(platform.url(f"/action/endpoint/{code['id']}"), timeout=10)
    assert response.status_code == 204
    assert "POST" in response.headers["Allow"]
    assert _runs(db, code["id"]) == 0
    # The code still runs for every other method.
    assert call(platform, code["id"], method="PUT").json() == {"ran": True}
    assert _runs(db, code["id"]) == 1


def test_wildcard_entries_match_subdomains_only(platform):
    code = create_code(platform, SOURCE)
    path = f"/action/endpoint/{code['id']}"
    shop = _preflight(platform, path, "https://shop.partner.example")
    assert shop.headers["Access-Control-Allow-Origin"] == "https://shop.partner.example"
    plain_http = _preflight(platform, path, "http://shop.partner.example")
    assert "Access-Control-Allow-Origin" not in plain_http.headers


def test_responses_to_an_allowed_origin_carry_the_headers(platform, db):
    code = create_code(platform, SOURCE)
    allowed = call(platform, code["id"], headers={"Origin": ALLOWED})
    assert allowed.status_code == 200 and allowed.json() == {"ran": True}
    assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "X-Pagination" in allowed.headers["Access-Control-Expose-Headers"]
    # CORS is the browser's check: another origin's call still runs, without the headers.
    other = call(platform, code["id"], headers={"Origin": "https://evil.example"})
    assert other.status_code == 200 and "Access-Control-Allow-Origin" not in other.headers
    assert _runs(db, code["id"]) == 2
    # Management routes too (a browser UI on an allowed origin lists runs).
    runs = requests.get(platform.url("/coderun"), params={"code_id": code["id"]},
                        headers={"Origin": ALLOWED}, timeout=10)
    assert runs.headers["Access-Control-Allow-Origin"] == ALLOWED


def test_a_preflight_of_an_unknown_route_is_still_404(platform):
    assert _preflight(platform, "/nowhere", ALLOWED).status_code == 404
