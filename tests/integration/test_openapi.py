"""`/openapi.json` is a valid OpenAPI 3.0 document that says what the server answers
(Schemathesis, tests/integration/test_fuzz.py, holds the server to it request by request)."""

from __future__ import annotations

import requests
from openapi_spec_validator import validate


def _spec(platform) -> dict:  # noqa: ANN001
    response = requests.get(platform.url("/openapi.json"), timeout=10)
    assert response.status_code == 200
    return response.json()


def test_the_document_validates_and_lists_every_route(platform):
    spec = _spec(platform)
    validate(spec)
    for path in ("/", "/health", "/healthz", "/metrics", "/openapi.json", "/docs", "/code",
                 "/coderun/batch", "/action/endpoint/{code_id}"):
        assert path in spec["paths"], path
        assert "options" in spec["paths"][path], path


def test_errors_are_documented_as_the_server_sends_them(platform):
    spec = _spec(platform)
    error = spec["components"]["schemas"]["Error"]
    assert error.get("additionalProperties", True) is not False
    assert {"message", "field", "run_id", "error"} <= set(error["properties"])
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in ("parameters", "options"):
                continue
            responses = operation["responses"]
            assert "422" not in responses, (path, method)
            for status in ("400", "404", "408", "413", "503"):
                assert status in responses, (path, method, status)
    endpoint = spec["paths"]["/action/endpoint/{code_id}"]["post"]["responses"]
    assert {"429", "500"} <= set(endpoint)
    assert {"application/json", "text/html", "text/plain"} <= set(endpoint["200"]["content"])


def test_parameters_say_what_the_server_takes(platform):
    spec = _spec(platform)
    pagination = spec["components"]["headers"]["PAGINATION"]
    assert pagination["schema"] == {"type": "string"}
    runs = {p["name"]: p for p in spec["paths"]["/coderun"]["get"]["parameters"]}
    assert runs["after"]["schema"]["format"] == "date-time"
    assert runs["page"]["schema"]["maximum"] == 1_000_000
    run_id = spec["paths"]["/coderun/{run_id}"]["parameters"][0]
    assert "pattern" in run_id["schema"]
    create = spec["components"]["schemas"]["CodeCreateJson"]
    assert create["required"] == ["source"]
    assert set(create["properties"]["language"]["enum"]) == {"python", "javascript", "go"}
    assert set(create["properties"]["type"]["enum"]) == {"flow", "endpoint"}
    assert '"format": null' not in requests.get(platform.url("/openapi.json")).text
