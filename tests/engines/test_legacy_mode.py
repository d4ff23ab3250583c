"""Legacy mode (engines/PROTOCOL.md, "Legacy mode"), item by item and per language, in a
one-shot container and in a warm environment: a job with `"compat": "legacy"` behaves as the
old service's engine did (SPEC.md, "The old engine's leniency"), each leniency told in a
`debug` log; the same code without it (strict) fails as before."""

from __future__ import annotations

from collections.abc import Callable
from textwrap import dedent
from typing import Any

import pytest

from .conftest import ENGINE_MODES, RunOutput, engine_runner


def src(text: str) -> str:
    return dedent(text).lstrip("\n")


@pytest.fixture(params=ENGINE_MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


def _runner(image: str, mode: str) -> Callable[..., RunOutput]:
    runner = engine_runner(mode)

    def _run(source: str, compat: str | None = "legacy", **kwargs: Any) -> RunOutput:
        return runner(image, source, compat=compat, **kwargs)

    return _run


@pytest.fixture()
def py(python_image: str, mode: str) -> Callable[..., RunOutput]:
    return _runner(python_image, mode)


@pytest.fixture()
def js(javascript_image: str, mode: str) -> Callable[..., RunOutput]:
    return _runner(javascript_image, mode)


def debug_logs(out: RunOutput) -> list[str]:
    return [content for level, content in out.logs if level == "debug"]


def completed_with(out: RunOutput, value: str, status_code: int, content_type: str) -> None:
    assert out.end == {"t": "end", "status": "completed"}, (out.frames, out.stderr)
    assert out.result == {"t": "result", "value": value, "status_code": status_code,
                          "content_type": content_type}


def failed_but_answered(out: RunOutput, error: str, value: str, status_code: int,
                        content_type: str) -> None:
    """The run failed with its error log, yet the result frame (before the end) answers."""
    assert out.end == {"t": "end", "status": "failed", "error": error}, out.frames
    assert ("error", f"Action execution failed: {error}") in out.logs
    kinds = [frame["t"] for frame in out.frames]
    assert kinds.index("result") < kinds.index("end")
    assert out.result == {"t": "result", "value": value, "status_code": status_code,
                          "content_type": content_type}
    assert any("the caller still gets the result" in line for line in debug_logs(out))


# ----------------------------------------------------------------------------- content types

CONTENT_TYPES = [
    ("application/json", "json"),
    ("application/json; charset=utf-8", "json"),
    ("application/problem+json", "json"),
    ("text/html", "html"),
    ("TEXT/PLAIN", "text"),
    ("xml", "text"),
    ("jsonn", "text"),
]


@pytest.mark.parametrize(("given", "kind"), CONTENT_TYPES)
def test_python_content_type_names(py, given: str, kind: str) -> None:  # noqa: ANN001
    code = f"def Run(engine):\n    engine.result.set('x', content_type={given!r})\n"
    out = py(code)
    completed_with(out, "x", 200, kind)
    assert len(debug_logs(out)) == 1 and repr(given) in debug_logs(out)[0]
    strict = py(code, compat=None)
    assert strict.end["status"] == "failed" and strict.result is None
    assert "content_type must be one of text, json, html" in strict.end["error"]


@pytest.mark.parametrize(("given", "kind"), CONTENT_TYPES)
def test_javascript_content_type_names(js, given: str, kind: str) -> None:  # noqa: ANN001
    code = f"function Run(engine) {{ engine.result.set('x', {{ contentType: {given!r} }}); }}\n"
    out = js(code)
    completed_with(out, "x", 200, kind)
    assert len(debug_logs(out)) == 1 and given in debug_logs(out)[0]
    strict = js(code, compat="strict")
    assert strict.end["status"] == "failed" and strict.result is None
    assert "contentType must be one of text, json, html" in strict.end["error"]


def test_python_a_mapping_is_told_once_per_run(py) -> None:  # noqa: ANN001
    out = py("def Run(engine):\n    for _ in range(50):\n"
             "        engine.result.set('x', content_type='application/json')\n")
    completed_with(out, "x", 200, "json")
    assert len(debug_logs(out)) == 1


# ----------------------------------------------------------------------------- status codes

STATUS_CODES = [(999, 200), (99, 200), (-1, 200), ("abc", 200), (None, 200), (201.5, 200)]


@pytest.mark.parametrize(("given", "answered"), STATUS_CODES)
def test_python_status_outside_http_answers_200(py, given: object, answered: int) -> None:  # noqa: ANN001
    code = f"def Run(engine):\n    engine.result.set('x', status_code={given!r})\n"
    out = py(code)
    completed_with(out, "x", answered, "text")
    assert any("answered 200" in line for line in debug_logs(out))
    strict = py(code, compat="strict")
    assert strict.end["status"] == "failed"
    assert "status_code must be an HTTP status" in strict.end["error"]


@pytest.mark.parametrize(("given", "answered"), [(999, 200), ("abc", 200), (None, 200)])
def test_javascript_status_outside_http_answers_200(js, given: object, answered: int) -> None:  # noqa: ANN001
    literal = "null" if given is None else repr(given)
    code = f"function Run(engine) {{ engine.result.set('x', {{ statusCode: {literal} }}); }}\n"
    out = js(code)
    completed_with(out, "x", answered, "text")
    assert any("answered 200" in line for line in debug_logs(out))
    strict = js(code, compat=None)
    assert strict.end["status"] == "failed"
    assert "statusCode must be an HTTP status" in strict.end["error"]


@pytest.mark.parametrize("compat", ["legacy", None])
def test_a_string_status_works_in_every_mode_and_is_told(py, js, compat: str | None) -> None:  # noqa: ANN001
    out = py("def Run(engine):\n    engine.result.set('x', status_code='201')\n", compat=compat)
    completed_with(out, "x", 201, "text")
    assert debug_logs(out) == ["result.set: status_code '201' (a string) taken as 201"]
    out = js("function Run(engine) { engine.result.set('x', { statusCode: '201' }); }\n",
             compat=compat)
    completed_with(out, "x", 201, "text")
    assert debug_logs(out) == ["result.set: statusCode '201' (a string) taken as 201"]


# ----------------------------------------------------------------------------- failures


def test_python_exception_after_set_answers_what_was_set(py) -> None:  # noqa: ANN001
    code = src(
        """
        def Run(engine):
            engine.log.info("before")
            engine.result.set({"ok": True}, status_code=201, content_type="json")
            raise RuntimeError("boom")
        """
    )
    out = py(code)
    failed_but_answered(out, "boom", '{"ok": true}', 201, "json")
    assert out.logs[0] == ("info", "before")
    assert "RuntimeError: boom" in out.stdout  # the traceback stays the owner's to read
    strict = py(code, compat="strict")
    assert strict.end == {"t": "end", "status": "failed", "error": "boom"}
    assert strict.result is None and debug_logs(strict) == []


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("def Run(engine):\n    raise ValueError('early')\n", "early"),
        ("def Run(engine):\n    engine.result.set('x', status=201)\n",
         "Result.set() got an unexpected keyword argument 'status'"),
        ("Run = 3\n", "Run must be a function taking the engine: def Run(engine): ..."),
        ("import sys\ndef Run(engine):\n    sys.exit(2)\n",
         "SystemExit: exit() called with status 2"),
    ],
)
def test_python_failure_before_set_answers_an_empty_200(py, code: str, error: str) -> None:  # noqa: ANN001
    failed_but_answered(py(code), error, "", 200, "text")


def test_python_failure_before_run_is_not_answered(py) -> None:  # noqa: ANN001
    """The old engine failed too when the module itself did not load (it was imported
    outside its try): a syntax error or a top-level exception stays a plain failure."""
    for code in ("def Run(engine)\n    pass\n", "raise ValueError('top')\ndef Run(engine):\n"
                 "    pass\n"):
        out = py(code)
        assert out.end["status"] == "failed" and out.result is None, out.frames


@pytest.mark.parametrize(
    ("call", "error"),
    [
        ("throw new Error('boom')", "boom"),
        ("return Promise.reject(new Error('later'))", "later"),
        ("setTimeout(() => { throw new Error('tick'); }, 1); return new Promise(() => {})",
         "tick"),
    ],
)
def test_javascript_failure_after_set_answers_what_was_set(js, call: str, error: str) -> None:  # noqa: ANN001
    code = (
        "async function Run(engine) {\n"
        "  engine.result.set({ ok: true }, { statusCode: 202, contentType: 'json' });\n"
        f"  {call};\n}}\nmodule.exports = {{ Run }};\n"
    )
    failed_but_answered(js(code), error, '{"ok":true}', 202, "json")
    strict = js(code, compat=None)
    assert strict.end == {"t": "end", "status": "failed", "error": error}
    assert strict.result is None


# ----------------------------------------------------------------------------- no Run, exit(0)


def test_python_source_without_run_runs_as_a_script(py) -> None:  # noqa: ANN001
    out = py("import json\nprint(json.dumps({'ran': True}))\n")
    completed_with(out, "", 200, "text")
    assert out.stdout == '{"ran": true}\n'
    assert debug_logs(out) == [
        "no Run(engine) in the source: it ran as a script and the caller gets an empty 200 "
        "(legacy mode)"
    ]
    strict = py("print('x')\n", compat="strict")
    assert strict.end["status"] == "failed"
    assert "Run(engine) is not defined" in strict.end["error"]


@pytest.mark.parametrize("call", ["sys.exit(0)", "sys.exit()", "exit()", "raise SystemExit"])
def test_python_clean_exit_answers_what_was_set(py, call: str) -> None:  # noqa: ANN001
    code = (f"import sys\ndef Run(engine):\n    engine.result.set('set', status_code=202)\n"
            f"    {call}\n    engine.result.set('never')\n")
    out = py(code)
    completed_with(out, "set", 202, "text")
    assert any("the run ends as if the code had returned" in line for line in debug_logs(out))
    assert py(code, compat="strict").end["status"] == "failed"


def test_javascript_source_without_run_runs_as_a_script(js) -> None:  # noqa: ANN001
    """As `node -e <source>` did: top-level code and whatever it scheduled run to the end of
    the event loop; what it printed is kept; the answer is an empty 200."""
    code = src(
        """
        const started = Date.now();
        console.log("top level");
        setTimeout(() => {
          Promise.resolve().then(() => console.log("later", Date.now() - started >= 50));
        }, 50);
        """
    )
    out = js(code)
    completed_with(out, "", 200, "text")
    assert out.stdout == "top level\nlater true\n"
    assert len(debug_logs(out)) == 1 and "ran as a script" in debug_logs(out)[0]
    strict = js(code, compat="strict")
    assert strict.end["status"] == "failed"
    assert "Run(engine) is not defined" in strict.end["error"]


def test_javascript_script_failures_stay_failures(js) -> None:  # noqa: ANN001
    """A script that throws failed under the old service too (node wrote to stderr)."""
    for code in ("throw new Error('top');\n", "setTimeout(() => { throw new Error('x'); }, 1);\n"):
        out = js(code)
        assert out.end["status"] == "failed" and out.result is None, out.frames


@pytest.mark.parametrize("call", ["process.exit(0)", "process.exit()"])
def test_javascript_clean_exit_answers_what_was_set(js, call: str) -> None:  # noqa: ANN001
    code = (f"function Run(engine) {{ engine.result.set('set', 202); {call}; }}\n"
            "module.exports = { Run };\n")
    out = js(code)
    completed_with(out, "set", 202, "text")
    assert any("the run ends as if the code had returned" in line for line in debug_logs(out))
    assert js(code, compat=None).end["status"] == "failed"
    out = js("console.log('bye'); process.exit(0);\n")
    completed_with(out, "", 200, "text")
    assert out.stdout == "bye\n"


# ----------------------------------------------------------------------------- Go

GO_TIMEOUT = 20
TEST_LABELS = {"codeactions.test-compile": "1"}


@pytest.fixture(scope="module")
def go_builder(docker_client, go_image: str, tmp_path_factory):  # noqa: ANN001, ANN201
    from shared.settings import Settings
    from worker.preparers.go_build import GoBuilder

    return GoBuilder(docker_client, Settings(), tmp_path_factory.mktemp("go-legacy-cache"),
                     image=go_image, labels=TEST_LABELS)


@pytest.fixture()
def go(docker_client, go_builder, go_image: str, mode: str):  # noqa: ANN001, ANN201
    """Compile as the worker does for the compat mode, then run as the worker does (a
    one-shot container, or a warm or resident environment bound to the artifact): a
    SandboxOutcome."""
    from shared.settings import Settings
    from worker.run_executor import engine_job
    from worker.sandbox.sandbox import Sandbox, SandboxLimits
    from worker.warm.environment import WarmEnvironment
    from worker.warm.environments import split_job

    settings = Settings()
    sandbox = Sandbox(docker_client, settings)
    labels = {"codeactions.test": "go-legacy"}

    def _run(source: str, compat: str = "legacy"):  # noqa: ANN202
        job = engine_job(source, compat=compat)
        job.update(go_builder.job_fields(source, compat))
        limits = SandboxLimits.for_code(settings, GO_TIMEOUT, network=False)
        if mode == "one-shot":
            return sandbox.run(go_image, job, limits, labels)
        bind, run_job = split_job("go", job)
        if mode == "resident":
            bind.update(resident=True, rss_max=limits.memory_bytes * 6 // 10)
        env = WarmEnvironment(sandbox, ("go-legacy-test",), go_image, limits, labels, bind)
        try:
            env.start()
            outcome = env.run(run_job, limits)
            assert env.drain(), outcome
            return outcome
        finally:
            env.destroy()

    return _run


def go_debug(outcome) -> list[str]:  # noqa: ANN001
    return [entry["content"] for entry in outcome.logs if entry["type"] == "debug"]


GO_PROGRAM = src(
    """
    package main

    import (
        "fmt"
        "os"
    )

    func main() {
        fmt.Println("hello from main")
        fmt.Fprintln(os.Stderr, "on stderr")
    }
    """
)


def test_go_program_with_main_runs_as_a_program(go, go_builder) -> None:  # noqa: ANN001
    assert go_builder.job_fields(GO_PROGRAM, "legacy")["program"] is True
    outcome = go(GO_PROGRAM)
    assert outcome.status == "completed", (outcome.error, outcome.logs)
    assert (outcome.result, outcome.status_code, outcome.content_type) == ("", 200, "text")
    assert outcome.stdout == "hello from main\non stderr\n"
    assert len(go_debug(outcome)) == 1 and "whole program" in go_debug(outcome)[0]
    from worker.preparers.preparer import PreparationError

    with pytest.raises(PreparationError, match=r"not func main \(the build adds main\)"):
        go(GO_PROGRAM, compat="strict")  # the worker fails the run with this message


def test_go_program_failing_fails(go) -> None:  # noqa: ANN001
    exits = GO_PROGRAM.replace('fmt.Fprintln(os.Stderr, "on stderr")', "os.Exit(3)")
    outcome = go(exits)
    assert outcome.status == "failed" and outcome.error == "the program exited with status 3"
    panics = GO_PROGRAM.replace('"on stderr")', '"dying")\n    panic("no")')
    outcome = go(panics)
    assert outcome.status == "failed" and outcome.error == "panic: no"
    assert not outcome.answered


def go_action(body: str) -> str:
    return ('package main\n\nimport (\n\t"errors"\n\t"os"\n\n\t"codeactions"\n)\n\n'
            "var _ = errors.New\nvar _ = os.Exit\n\n"
            f"func Run(engine *codeactions.Engine) error {{\n{body}\n}}\n")


def test_go_content_type_and_status_mapped(go) -> None:  # noqa: ANN001
    outcome = go(go_action(
        '\treturn engine.Result.Set("x", codeactions.WithContentType("application/json"),'
        " codeactions.WithStatusCode(999))"
    ))
    assert outcome.status == "completed", (outcome.error, outcome.logs)
    assert (outcome.result, outcome.status_code, outcome.content_type) == ("x", 200, "json")
    assert len(go_debug(outcome)) == 2
    assert 'content type "application/json" taken as "json"' in go_debug(outcome)[0]
    assert "status code 999" in go_debug(outcome)[1]
    strict = go(go_action('\treturn engine.Result.Set("x", codeactions.WithContentType("xml"))'),
                compat="strict")
    assert strict.status == "failed" and "content type must be one of" in strict.error


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('\treturn errors.New("boom")', "boom"),
        ('\tpanic("bad")', "panic: bad"),
    ],
)
def test_go_failure_after_set_answers_what_was_set(go, body: str, error: str) -> None:  # noqa: ANN001
    source = go_action('\tengine.Result.Set(map[string]int{"n": 1}, '
                       'codeactions.WithStatusCode(201), codeactions.WithContentType("json"))\n'
                       + body)
    outcome = go(source)
    assert outcome.status == "failed" and outcome.exit_reason == "error"
    assert outcome.error == error and outcome.answered
    assert (outcome.result, outcome.status_code, outcome.content_type) == ('{"n":1}', 201, "json")
    assert any("the caller still gets the result" in line for line in go_debug(outcome))
    strict = go(source, compat="strict")
    assert strict.status == "failed" and not strict.answered


def test_go_os_exit_0_answers_an_empty_200(go) -> None:  # noqa: ANN001
    outcome = go(go_action('\tengine.Result.Set("lost")\n\tos.Exit(0)\n\treturn nil'))
    assert outcome.status == "completed"
    assert (outcome.result, outcome.status_code) == ("", 200)
    assert any("os.Exit(0)" in line for line in go_debug(outcome))
    assert go(go_action("\tos.Exit(0)\n\treturn nil"), compat="strict").status == "failed"
