"""Legacy mode through the whole stack: a code's `compat` reaches the engine, and a legacy
code's failure after result.set answers that result over HTTP while the run stays failed
with its error log (SPEC.md, "The old engine's leniency"); strict codes answer 500 as before.
tests/engines/test_legacy_mode.py covers every leniency engine by engine."""

from __future__ import annotations

import pytest
import requests

from tests.integration.helpers import call, create_code

RAISES_AFTER_SET = (
    "def Run(engine):\n"
    "    engine.log.info('before')\n"
    "    engine.result.set({'ok': True}, status_code='201', content_type='application/json')\n"
    "    raise RuntimeError('boom')\n"
)


def _run_and_logs(platform, run_id: str) -> tuple[dict, list[tuple[str, str]]]:  # noqa: ANN001
    run = requests.get(platform.url(f"/coderun/{run_id}"), timeout=10).json()
    logs = requests.get(platform.url("/codelog"), params={"run_id": run_id, "order": "asc"},
                        timeout=10).json()
    return run, [(entry["type"], entry["content"]) for entry in logs["data"]]


def _latest_run_id(platform, code_id: str) -> str:  # noqa: ANN001
    runs = requests.get(platform.url("/coderun"), params={"code_id": code_id}, timeout=10).json()
    return runs[0]["id"]


@pytest.mark.parametrize("warm", [False, True], ids=["pool", "warm"])
def test_legacy_failure_after_set_answers_the_set_result(platform, warm: bool):  # noqa: ANN001
    code = create_code(platform, RAISES_AFTER_SET, compat="legacy", warm=warm)
    assert code["compat"] == "legacy"
    response = call(platform, code["id"])
    assert response.status_code == 201, response.text
    assert response.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert response.json() == {"ok": True}
    run, logs = _run_and_logs(platform, _latest_run_id(platform, code["id"]))
    assert run["status"] == "failed" and run["exit_reason"] == "error"
    assert run["result"] == '{"ok": true}'
    assert run["extra"] == {"status_code": 201, "content_type": "json", "error": "boom",
                            "answered": True}
    assert logs[0] == ("info", "before")
    assert ("error", "Action execution failed: boom") in logs
    told = [content for kind, content in logs if kind == "debug"]
    assert any("'201' (a string) taken as 201" in line for line in told)
    assert any("'application/json' taken as 'json'" in line for line in told)
    assert any("the caller still gets the result" in line for line in told)
    # /endpoint answers the same result as text.
    plain = requests.post(platform.url(f"/endpoint/{code['id']}"), timeout=60)
    assert plain.status_code == 201 and plain.text == '{"ok": true}'
    assert plain.headers["Content-Type"] == "text/plain; charset=UTF-8"


def test_strict_code_still_answers_500(platform):  # noqa: ANN001
    code = create_code(platform, RAISES_AFTER_SET.replace("'application/json'", "'json'"))
    assert code["compat"] == "strict"
    response = call(platform, code["id"])
    assert response.status_code == 500
    assert response.json()["error"] == "boom"
    run, logs = _run_and_logs(platform, response.json()["run_id"])
    assert run["status"] == "failed" and run["result"] == "boom"
    assert run["extra"] == {"status_code": 500, "content_type": "json", "error": "boom"}


def test_patching_compat_changes_the_answer(platform):  # noqa: ANN001
    """The mode is the code's, read at each run (a warm environment of the other mode is
    not reused)."""
    code = create_code(platform, RAISES_AFTER_SET, compat="legacy", warm=True)
    assert call(platform, code["id"]).status_code == 201
    patched = requests.patch(platform.url(f"/code/{code['id']}"), params={"compat": "strict"},
                             timeout=10)
    assert patched.status_code == 200 and patched.json()["compat"] == "strict"
    response = call(platform, code["id"])
    assert response.status_code == 500
    assert "content_type must be one of text, json, html" in response.json()["error"]


def test_legacy_limits_are_not_answered(platform):  # noqa: ANN001
    """A timeout is the platform's verdict, not the code's failure: 408 as for any code."""
    code = create_code(
        platform,
        "import time\ndef Run(engine):\n    engine.result.set('set')\n    time.sleep(30)\n",
        compat="legacy", timeout=5,
    )
    response = call(platform, code["id"])
    assert response.status_code == 408


@pytest.mark.parametrize(
    ("language", "source", "printed"),
    [
        ("javascript", "console.log('script ran');\n", "script ran"),
        ("go", 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("program ran") }\n',
         "program ran"),
        ("python", "print('script ran')\n", "script ran"),
    ],
)
def test_legacy_scripts_and_programs_answer_an_empty_200(
    platform, language: str, source: str, printed: str  # noqa: ANN001
):
    code = create_code(platform, source, language=language, compat="legacy")
    response = call(platform, code["id"])
    assert response.status_code == 200, response.text
    assert response.text == ""
    run, logs = _run_and_logs(platform, _latest_run_id(platform, code["id"]))
    assert run["status"] == "completed"
    assert any(kind == "debug" and "(legacy mode)" in content for kind, content in logs)
    assert ("debug", f"[stdout] {printed}\n") in logs  # what it printed, kept as a log
    strict = create_code(platform, source, language=language)
    assert call(platform, strict["id"]).status_code == 500
