"""The same behaviour, through the whole stack, for every language."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.integration.helpers import call, create_code

MATRIX = Path(__file__).parent / "matrix"
EXTENSIONS = {"python": "py", "javascript": "js", "go": "go"}
LANGUAGES = list(EXTENSIONS)
# One container per run for every language, and warm environments where an engine has them
# (a warm JavaScript code runs one container per run: see worker/warm/environments.py).
MODES = [pytest.param(language, warm, id=language + ("-warm" if warm else ""))
         for language in LANGUAGES for warm in (False, True)]


def _source(name: str, language: str) -> str:
    return (MATRIX / f"{name}.{EXTENSIONS[language]}").read_text()


@pytest.mark.parametrize(("language", "warm"), MODES)
def test_engine_api_matrix(platform, language: str, warm: bool):
    code = create_code(platform, _source("echo", language), language=language, warm=warm)
    response = call(
        platform, code["id"], params=[("name", "first"), ("name", "second")],
        data="  the body  ", headers={"User-Agent": "matrix/1"},
    )
    assert response.status_code == 207, response.text
    assert response.headers["Content-Type"] == "application/json; charset=UTF-8"
    got = response.json()
    assert got["name"] == "first" and got["body"] == "the body"
    assert got["agent"] == "matrix/1" and got["absent"] == ""
    assert got["missing"] in (None, "")  # None / null in Python and JS, "" in Go
    run = requests.get(platform.url("/coderun"), params={"code_id": code["id"]}).json()[0]
    logs = requests.get(platform.url("/codelog"),
                        params={"run_id": run["id"], "order": "asc"}).json()["data"]
    assert [(e["type"], e["content"]) for e in logs] == [
        ("debug", "first"), ("info", "second"), ("error", "third")]


@pytest.mark.parametrize(("language", "warm"), MODES)
def test_error_fails_the_run(platform, language: str, warm: bool):
    code = create_code(platform, _source("fails", language), language=language, warm=warm)
    response = call(platform, code["id"])
    assert response.status_code == 500
    run_id = response.json()["run_id"]
    run = requests.get(platform.url(f"/coderun/{run_id}")).json()
    assert run["status"] == "failed" and "boom" in run["result"]
    logs = requests.get(platform.url("/codelog"),
                        params={"run_id": run_id, "order": "asc"}).json()["data"]
    assert logs[0]["content"] == "before"
    assert logs[1] == {**logs[1], "type": "error", "content": "Action execution failed: boom"}


def test_go_compile_error_is_reported_cleanly(platform):
    code = create_code(
        platform,
        'package main\n\nimport "codeactions"\n\nfunc Run(engine *codeactions.Engine) error {\n'
        "\treturn undefinedThing\n}\n",
        language="go",
    )
    response = call(platform, code["id"])
    assert response.status_code == 500
    error = response.json()["error"]
    assert "undefined: undefinedThing" in error and "/tmp" not in error
    # The second call is served from the compile cache and says the same.
    assert call(platform, code["id"]).json()["error"] == error


def test_a_go_source_using_cgo_is_told_so(platform):
    """Compiles run with cgo off, so the go tool skips a file that imports "C" and reports
    something beside the point ("undefined: Run"): the error names the cause."""
    code = create_code(
        platform,
        'package main\n\n// #include <stdlib.h>\nimport "C"\n\nimport "codeactions"\n\n'
        "func Run(engine *codeactions.Engine) error {\n\treturn nil\n}\n",
        language="go",
    )
    response = call(platform, code["id"])
    assert response.status_code == 500
    assert 'cgo is not supported (the source imports "C")' in response.json()["error"]
