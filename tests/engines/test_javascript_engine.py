"""The JavaScript engine, item by item against SPEC.md ("The code a user writes") and
engines/PROTOCOL.md, in the JS idiom, run in real hardened containers (the same `docker run`
as tests/engines/test_python_engine.py, plus the worker's own settings where they matter:
256 MiB of memory, an init process)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from .conftest import (
    ENGINE_MODES,
    Runner,
    RunOutput,
    engine_runner,
    init_args,
    parse_frames,
    run_engine_warm,
    sandbox_flags,
)

ENGINE_DIR = Path(__file__).resolve().parents[2] / "engines" / "javascript"


def src(text: str) -> str:
    return dedent(text).lstrip("\n")


def _completed(out: RunOutput) -> None:
    assert out.end == {"t": "end", "status": "completed"}, (out.frames, out.stderr)
    assert out.returncode == 0, out.stderr


def _failed(out: RunOutput, message: str) -> None:
    assert out.end == {"t": "end", "status": "failed", "error": message}, out.frames
    assert out.logs[-1] == ("error", f"Action execution failed: {message}")
    assert out.result is None


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(params=ENGINE_MODES)
def run(request: pytest.FixtureRequest, javascript_image: str) -> Runner:
    """Every JavaScript engine test runs in a one-shot container, in a warm environment and in
    a resident one."""
    runner = engine_runner(request.param)

    def _run(source: str | None = None, **kwargs: Any) -> RunOutput:
        return runner(javascript_image, source, **kwargs)

    return _run


def run_like_the_worker(
    image: str, source: str, *, memory: str = "256m", timeout: float = 60, warm: bool = False
) -> RunOutput:
    """`docker run` with the worker's memory default and its init process (worker/sandbox/sandbox.py);
    with `warm`, through a warm environment (which runs without an init, as the worker
    starts them)."""
    if warm:
        return run_engine_warm(image, source, timeout=timeout, flags=sandbox_flags(memory))
    flags = sandbox_flags(memory, init=True)
    job = {"source": source, "params": {}, "body": "", "headers": {}, "limits": {}}
    started = time.monotonic()
    proc = subprocess.run(
        ["docker", "run", "-i", "--rm", *flags, image, *init_args(image)],
        input=json.dumps(job).encode(),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return RunOutput(
        frames=parse_frames(proc.stdout),
        returncode=proc.returncode,
        stderr=proc.stderr.decode("utf-8", "replace"),
        elapsed=time.monotonic() - started,
        raw=proc.stdout,
    )


# ----------------------------------------------------------------------------- image


def test_image_tag_scheme_labels_and_config(javascript_image: str) -> None:
    import docker

    from worker.images import engine_image_tag

    assert javascript_image == engine_image_tag("javascript")
    repository, _, digest = javascript_image.partition(":")
    assert repository == "codeactions/engine-javascript"
    assert len(digest) == 16 and int(digest, 16) >= 0
    client = docker.from_env()
    try:
        image = client.images.get(javascript_image)
        assert image.labels["codeactions.engine"] == "javascript"
        assert image.labels["codeactions.hash"] == digest
        config = image.attrs["Config"]
        assert config["User"] == "65534:65534"
        assert config["WorkingDir"] == "/tmp"
        assert config["Entrypoint"] == ["/bin/sh", "/opt/codeactions/start.sh"]
        assert "HOME=/tmp" in config["Env"]
        assert image.attrs["Size"] < 300 * 1024 * 1024
    finally:
        client.close()


def test_ensure_images_is_cached(javascript_image: str) -> None:
    import docker

    from worker.images import ensure_images

    client = docker.from_env()
    try:
        started = time.monotonic()
        assert ensure_images(client, ["javascript"]) == {"javascript": javascript_image}
        assert time.monotonic() - started < 5
    finally:
        client.close()


def test_node_18_from_debian(run: Runner) -> None:
    out = run("exports.Run = (engine) => engine.result.set([process.version, process.execArgv]);\n")
    _completed(out)
    version, flags = json.loads(out.result["value"])
    assert version.startswith("v18.")
    assert "--no-addons" in flags
    # start.sh sized the heap under the container's 128 MiB: 128 - 48.
    assert "--max-old-space-size=80" in flags


# ----------------------------------------------------------------------------- params, body


def test_params(run: Runner) -> None:
    out = run(
        src(
            """
            async function Run(engine) {
              engine.log.info(JSON.stringify(engine.params.get("name")));
              engine.log.info(JSON.stringify(engine.params.get("missing")));
              engine.log.info(engine.params.get("missing"));
              engine.log.info(engine.params.get("missing", "fallback"));
              engine.log.info(engine.params.items().sort());
              engine.log.info(engine.params.toObject());
              engine.log.info(engine.params.has("page"), engine.params.size, [...engine.params]);
            }
            """
        ),
        params={"name": "ana", "page": "2"},
    )
    _completed(out)
    assert out.logs == [
        ("info", '"ana"'),
        ("info", "null"),
        ("info", "null"),
        ("info", "fallback"),
        ("info", '[["name","ana"],["page","2"]]'),
        ("info", '{"name":"ana","page":"2"}'),
        ("info", 'true 2 [["name","ana"],["page","2"]]'),
    ]


def test_params_keep_the_first_value(run: Runner) -> None:
    # The worker sends first values already; a list is cut to its first value anyway.
    out = run(
        "exports.Run = (engine) => engine.log.info(engine.params.toObject());\n",
        params={"tag": ["first", "second"], "n": 3},
    )
    _completed(out)
    assert out.logs == [("info", '{"tag":"first","n":"3"}')]


def test_body(run: Runner) -> None:
    code = src(
        """
        async function Run(engine) {
          engine.log.info(JSON.stringify(engine.body));
          engine.log.info(JSON.parse(engine.body || "{}"));
        }
        """
    )
    out = run(code, body='{"a": [1, 2]}')
    _completed(out)
    assert out.logs == [("info", '"{\\"a\\": [1, 2]}"'), ("info", '{"a":[1,2]}')]
    # Stripped even if the worker did not strip it.
    out = run(code, body='  \n{"a": 1}\n ')
    assert out.logs[0] == ("info", '"{\\"a\\": 1}"')


@pytest.mark.parametrize("job_body", ["", None, "missing"])
def test_empty_body_is_empty_string(run: Runner, job_body: str | None) -> None:
    job: dict = {"source": "exports.Run = (e) => e.log.info(JSON.stringify(e.body));\n"}
    if job_body != "missing":
        job["body"] = job_body
    out = run(raw_job=json.dumps(job).encode())
    _completed(out)
    assert out.logs == [("info", '""')]


# ----------------------------------------------------------------------------- headers


def test_header(run: Runner) -> None:
    out = run(
        src(
            """
            async function Run(engine) {
              const h = engine.header;
              engine.log.info(h.get("User-Agent"));
              engine.log.info(h.get("user-agent"));
              engine.log.info(h.get("USER-AGENT"));
              engine.log.info(h.get("X-Multi"));
              engine.log.info(JSON.stringify(h.get("X-Missing")));
              engine.log.info(h.items());
              engine.log.info(h.getAll("x-multi"), h.has("x-multi"), h.has("X-Missing"));
              engine.log.info(h.toObject());
              engine.log.info(h.constructor.name + " " + engine.params.constructor.name);
            }
            """
        ),
        headers={"User-Agent": ["curl/8"], "X-Multi": ["first", "second"]},
    )
    _completed(out)
    assert out.logs == [
        ("info", "curl/8"),
        ("info", "curl/8"),
        ("info", "curl/8"),
        ("info", "first"),
        ("info", '""'),
        ("info", '[["User-Agent",["curl/8"]],["X-Multi",["first","second"]]]'),
        ("info", '["first","second"] true false'),
        ("info", '{"User-Agent":["curl/8"],"X-Multi":["first","second"]}'),
        ("info", "Header Params"),
    ]


def test_request_groups_the_same_objects(run: Runner) -> None:
    out = run(
        src(
            """
            const assert = require("assert");
            async function Run(engine) {
              const r = engine.request;
              assert.strictEqual(r.params, engine.params);
              assert.strictEqual(r.header, engine.header);
              assert.strictEqual(r.log, engine.log);
              assert.strictEqual(r.body, "b");
              assert.strictEqual(engine.body, "b");
              r.log.info(r.params.get("p") + r.header.get("h"));
            }
            """
        ),
        params={"p": "P"},
        body="b",
        headers={"h": ["H"]},
    )
    _completed(out)
    assert out.logs == [("info", "PH")]


# ----------------------------------------------------------------------------- logs


def test_log_order_levels_and_formatting(run: Runner) -> None:
    out = run(
        src(
            """
            async function Run(engine) {
              engine.log.debug("one");
              engine.log.info({ two: 2, list: [1, "a", null] });
              engine.log.error(3);
              engine.log.info(null);
              engine.log.info(undefined);
              engine.log.info("several", 1, true, { a: 1 });
              engine.log.info();
              engine.log.info(new Error("oops"));
              engine.log.info(new Date(Date.UTC(2024, 4, 1, 10)));
              engine.log.info(new Map([["k", 1]]));
              const loop = { name: "loop" };
              loop.self = loop;
              engine.log.info(loop);
              engine.log.info(10n);
              engine.log.debug("last");
            }
            """
        )
    )
    _completed(out)
    assert out.logs == [
        ("debug", "one"),
        ("info", '{"two":2,"list":[1,"a",null]}'),
        ("error", "3"),
        ("info", "null"),
        ("info", "undefined"),
        ("info", 'several 1 true {"a":1}'),
        ("info", ""),
        ("info", "Error: oops"),
        ("info", "2024-05-01T10:00:00.000Z"),
        ("info", "Map(1) { 'k' => 1 }"),
        ("info", "<ref *1> { name: 'loop', self: [Circular *1] }"),
        ("info", "10"),
        ("debug", "last"),
    ]
    # Logs come first, then the result, then end.
    assert [f["t"] for f in out.frames] == ["log"] * 13 + ["result", "end"]


def test_log_cut_at_8000_chars(run: Runner) -> None:
    out = run(
        src(
            """
            async function Run(engine) {
              for (const n of [7999, 8000, 8001, 20000]) engine.log.info("é".repeat(n));
              engine.log.info("😀".repeat(8001));  // cut by characters, never mid-pair
            }
            """
        )
    )
    _completed(out)
    assert [len(content) for _, content in out.logs] == [7999, 8000, 8000, 8000, 8000]
    assert all(set(content) == {"é"} for _, content in out.logs[:4])
    assert set(out.logs[4][1]) == {"😀"}


def test_log_content_max_from_limits(run: Runner) -> None:
    out = run(
        "exports.Run = (engine) => engine.log.info('abcdefghij');\n",
        limits={"log_content_max": 4},
    )
    _completed(out)
    assert out.logs == [("info", "abcd")]


def test_lone_surrogates_become_replacement_characters(run: Runner) -> None:
    out = run("exports.Run = (e) => { e.log.info('a\\ud800b'); e.result.set('x\\udcff'); };\n")
    _completed(out)
    assert out.logs == [("info", "a\ufffdb")]
    assert out.result["value"] == "x\ufffd"


# ----------------------------------------------------------------------------- result


def test_no_set_gives_empty_result(run: Runner) -> None:
    out = run("async function Run(engine) {}\n")
    _completed(out)
    assert out.result == {"t": "result", "value": "", "status_code": 200, "content_type": "text"}
    assert out.stdout == ""
    assert [f["t"] for f in out.frames] == ["result", "end"]


def test_string_result_kept_as_is(run: Runner) -> None:
    out = run("async function Run(engine) { engine.result.set('{not json'); }\n")
    _completed(out)
    assert out.result == {
        "t": "result",
        "value": "{not json",
        "status_code": 200,
        "content_type": "text",
    }


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("{ ok: true, n: [1, 2.5, null] }", '{"ok":true,"n":[1,2.5,null]}'),
        ("[1, 'a']", '[1,"a"]'),
        ("42", "42"),
        ("null", "null"),
        ("true", "true"),
        ("new Date(Date.UTC(2024, 0, 2))", '"2024-01-02T00:00:00.000Z"'),
        ("undefined", ""),  # like calling set() with no value
        ("10n", "10"),  # not JSON-serialisable: String()
        ("(() => { const o = {}; o.o = o; return o; })()", "[object Object]"),
    ],
)
def test_non_string_result_json_encoded(run: Runner, expr: str, expected: str) -> None:
    out = run(f"exports.Run = (e) => {{ e.result.set({expr}, {{ contentType: 'json' }}); }};\n")
    _completed(out)
    assert out.result["value"] == expected


def test_second_set_wins_with_status_and_content_type(run: Runner) -> None:
    out = run(
        src(
            """
            async function Run(engine) {
              engine.result.set({ first: 1 }, { statusCode: 201, contentType: "json" });
              engine.result.set("<b>second</b>", { statusCode: 418, contentType: "html" });
            }
            """
        )
    )
    _completed(out)
    assert out.result == {
        "t": "result",
        "value": "<b>second</b>",
        "status_code": 418,
        "content_type": "html",
    }


@pytest.mark.parametrize(
    "call",
    [
        "set([1], { statusCode: 202, contentType: 'json' })",
        "set([1], { status_code: 202, content_type: 'json' })",
        "set([1], { statusCode: '202', contentType: ' JSON ' })",
        "set([1], 202, 'json')",
    ],
)
def test_result_options_spellings(run: Runner, call: str) -> None:
    out = run(f"exports.Run = (engine) => {{ engine.result.{call}; }};\n")
    _completed(out)
    assert out.result == {"t": "result", "value": "[1]", "status_code": 202, "content_type": "json"}


def test_spec_example(run: Runner) -> None:
    out = run(
        src(
            """
            async function Run(engine) {
              const name = engine.params.get("name");          // query parameter, or null
              const data = JSON.parse(engine.body || "{}");    // raw body ("" when none)
              const agent = engine.header.get("User-Agent");   // first value, or ""
              engine.log.info(`hello ${name} ${JSON.stringify(data)} ${agent}`);
              engine.result.set({ ok: true }, { statusCode: 201, contentType: "json" });
            }
            """
        ),
        params={"name": "ana"},
        headers={"User-Agent": ["curl/8"]},
    )
    _completed(out)
    assert out.logs == [("info", "hello ana {} curl/8")]
    assert out.result == {
        "t": "result",
        "value": '{"ok":true}',
        "status_code": 201,
        "content_type": "json",
    }


def test_invalid_content_type_fails(run: Runner) -> None:
    out = run("async function Run(e) { e.result.set('x', { contentType: 'xml' }); }\n")
    _failed(out, "contentType must be one of text, json, html; got 'xml'")
    # Catchable: the earlier result survives.
    out = run(
        src(
            """
            async function Run(engine) {
              engine.result.set("kept");
              try {
                engine.result.set("lost", { contentType: "application/json" });
              } catch (err) {
                engine.log.error(err.name);
              }
            }
            """
        )
    )
    _completed(out)
    assert out.logs == [("error", "TypeError")]
    assert out.result["value"] == "kept"


@pytest.mark.parametrize("code", ["99", "600", "'abc'", "200.5", "true"])
def test_invalid_status_code_fails(run: Runner, code: str) -> None:
    out = run(f"async function Run(e) {{ e.result.set('x', {{ statusCode: {code} }}); }}\n")
    assert out.end["status"] == "failed"
    assert out.end["error"].startswith("statusCode must be an HTTP status (200-599)")


def test_result_is_readable_and_cannot_be_tampered_with(run: Runner) -> None:
    out = run(
        src(
            """
            async function Run(engine) {
              engine.result.set([1], { statusCode: 202, contentType: "json" });
              const { value, statusCode, contentType } = engine.result;
              engine.log.info(value, statusCode, contentType);
              engine.result._statusCode = {};
              engine.result.value = "forged";  // a getter only: ignored outside strict mode
              engine.log.info(Object.isFrozen(engine), Object.isFrozen(engine.request));
            }
            """
        )
    )
    _completed(out)
    assert out.logs == [("info", "[1] 202 json"), ("info", "true true")]
    assert out.result == {"t": "result", "value": "[1]", "status_code": 202, "content_type": "json"}


# ----------------------------------------------------------------------------- module styles


@pytest.mark.parametrize(
    "code",
    [
        "async function Run(engine) { engine.result.set('ok'); }",
        "function Run(engine) { engine.result.set('ok'); }",
        "const Run = async (engine) => { engine.result.set('ok'); };",
        "var Run = function (engine) { engine.result.set('ok'); };",
        "module.exports = { Run: async (engine) => { engine.result.set('ok'); } };",
        "module.exports.Run = async function (engine) { engine.result.set('ok'); };",
        "exports.Run = (engine) => engine.result.set('ok');",
        "module.exports = async function (engine) { engine.result.set('ok'); };",
        "'use strict';\nasync function Run(engine) { engine.result.set('ok'); }\n// no newline",
        "async function Run(engine) { engine.result.set('top'); }\n"
        "module.exports = { Run: (engine) => engine.result.set('ok') };",
    ],
    ids=[
        "async-function",
        "sync-function",
        "const-arrow",
        "var-function",
        "module-exports-object",
        "module-exports-run",
        "exports-run",
        "module-exports-function",
        "strict-no-trailing-newline",
        "exports-win-over-top-level",
    ],
)
def test_module_styles(run: Runner, code: str) -> None:
    out = run(code)
    _completed(out)
    assert out.result["value"] == "ok"


def test_async_run_is_awaited(run: Runner) -> None:
    out = run(
        src(
            """
            const { setTimeout: sleep } = require("timers/promises");
            async function Run(engine) {
              await sleep(50);
              engine.log.info("after sleep");
              await Promise.all([sleep(10), sleep(20)]);
              engine.result.set("async ok");
            }
            """
        )
    )
    _completed(out)
    assert out.logs == [("info", "after sleep")]
    assert out.result["value"] == "async ok"


def test_returned_thenable_is_awaited(run: Runner) -> None:
    out = run(
        "function Run(engine) { return new Promise((r) => setTimeout(r, 30))"
        ".then(() => engine.result.set('then ok')); }\n"
    )
    _completed(out)
    assert out.result["value"] == "then ok"


# ----------------------------------------------------------------------------- failures


def test_thrown_error_fails_the_run(run: Runner) -> None:
    out = run(
        src(
            """
            async function Run(engine) {
              engine.log.info("before");
              engine.result.set("partial");
              throw new Error("boom");
            }
            """
        )
    )
    assert out.logs == [("info", "before"), ("error", "Action execution failed: boom")]
    assert out.end == {"t": "end", "status": "failed", "error": "boom"}
    assert out.result is None
    assert out.stdout.startswith("Error: boom\n")  # the stack, for the user
    assert "at Run (/tmp/action.js:4:9)" in out.stdout
    assert "harness" not in out.stdout and "node:" not in out.stdout
    assert out.returncode == 1


def test_rejected_promise_fails_the_run(run: Runner) -> None:
    out = run(
        src(
            """
            module.exports = {
              Run: async (engine) => {
                await null;
                return Promise.reject(new TypeError("nope"));
              },
            };
            """
        )
    )
    _failed(out, "nope")
    assert out.stdout.startswith("TypeError: nope\n")


@pytest.mark.parametrize(
    ("throw", "message"),
    [
        ("throw 'plain string'", "plain string"),
        ("throw { code: 7 }", '{"code":7}'),
        ("throw new Error()", "Error"),
        ("throw new RangeError()", "RangeError"),
        ("throw new (class Weird extends Error {})()", "Weird"),
        (
            "throw new (class Weird extends Error { get message() { throw new Error('no'); } })()",
            "Weird",
        ),
        ("throw undefined", "undefined was thrown"),
        ("throw null", "null was thrown"),
    ],
)
def test_failure_messages(run: Runner, throw: str, message: str) -> None:
    out = run(f"async function Run(engine) {{ {throw}; }}\n")
    _failed(out, message)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (
            "async function Run(e) { e.log.info('a'); await null; process.exit(0); }",
            "process.exit() called with code 0",
        ),
        ("function Run(e) { process.exit(); }", "process.exit() called"),
        (
            "function Run(e) { process.exitCode = 4; setTimeout(() => process.exit(), 5);"
            " return new Promise(() => {}); }",
            "process.exit() called with code 4",
        ),
        ("process.exit(3);\nfunction Run(e) {}", "process.exit() called with code 3"),
        ("function Run(e) { process.reallyExit(5); }", "process.exit() called with code 5"),
        ("function Run(e) { process.abort(); }", "process.abort() called"),
    ],
)
def test_exit_is_a_failure(run: Runner, code: str, message: str) -> None:
    out = run(code)
    _failed(out, message)
    assert out.returncode == 1


def test_error_in_a_callback_fails_the_run(run: Runner) -> None:
    out = run(
        src(
            """
            async function Run(engine) {
              setTimeout(() => { throw new Error("in timer"); }, 1);
              await new Promise((resolve) => setTimeout(resolve, 2000));
              engine.result.set("not reached");
            }
            """
        )
    )
    _failed(out, "in timer")
    assert "at Timeout._onTimeout (/tmp/action.js:2:28)" in out.stdout
    assert out.elapsed < 10


def test_unhandled_rejection_fails_the_run(run: Runner) -> None:
    out = run(
        src(
            """
            async function Run(engine) {
              Promise.reject(new Error("forgotten"));
              await new Promise((resolve) => setTimeout(resolve, 2000));
            }
            """
        )
    )
    _failed(out, "forgotten")


def test_never_settling_run_fails(run: Runner) -> None:
    out = run("exports.Run = () => new Promise(() => {});\n")
    _failed(out, "Run(engine) never finished: the promise it returned never settled")


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("function Run(engine {\n}\n", "Unexpected token '{'"),
        ("const x = 1;\n", "Run(engine) is not defined"),
        ("const Run = 3;\n", "Run must be a function"),
        ("module.exports = { Run: 'nope' };\n", "Run must be a function"),
        ("require('no_such_module_xyz');\nfunction Run(e) {}\n", "'no_such_module_xyz'"),
        (
            "import fs from 'fs';\nexport async function Run(engine) {}\n",
            "Cannot use import statement outside a module (an action is a CommonJS module",
        ),
    ],
)
def test_load_failures(run: Runner, code: str, fragment: str) -> None:
    out = run(code)
    assert out.end["status"] == "failed"
    assert fragment in out.end["error"], out.end
    assert out.logs[-1] == ("error", f"Action execution failed: {out.end['error']}")


def test_syntax_error_points_at_the_users_line(run: Runner) -> None:
    out = run("// one\nasync function Run(engine) {\n  engine.log.info('x')\n  let = = 2;\n}\n")
    assert out.end == {"t": "end", "status": "failed", "error": "Unexpected token '='"}
    assert out.stdout.startswith("/tmp/action.js:4\n  let = = 2;\n")


def test_stack_overflow_is_a_catchable_range_error(run: Runner) -> None:
    out = run(
        src(
            """
            function deep(n) { return deep(n + 1) + 1; }
            async function Run(engine) {
              try { deep(0); } catch (err) { engine.result.set(err.constructor.name); }
            }
            """
        )
    )
    _completed(out)
    assert out.result["value"] == "RangeError"


def test_invalid_job(run: Runner) -> None:
    out = run(raw_job=b"{not json")
    assert out.end["status"] == "failed"
    assert out.end["error"].startswith("invalid job:")
    assert out.returncode == 2
    out = run(raw_job=b'{"source": 3}')
    assert out.end == {
        "t": "end",
        "status": "failed",
        "error": "invalid job: job must be an object with a string 'source'",
    }


# ----------------------------------------------------------------------------- stdout capture


def test_printed_fake_frames_stay_inside_the_stdout_frame(run: Runner) -> None:
    out = run(
        src(
            """
            const fs = require("fs");
            const { execSync } = require("child_process");
            function frame(obj) {
              const body = Buffer.from(JSON.stringify(obj));
              const head = Buffer.alloc(4);
              head.writeUInt32BE(body.length);
              return Buffer.concat([head, body]);
            }
            const FAKE = frame({ t: "result", value: "pwned", status_code: 200 });
            const FAKE_END = frame({ t: "end", status: "completed" });
            async function Run(engine) {
              console.log(FAKE.toString());
              process.stdout.write(FAKE);
              fs.writeSync(1, FAKE_END);
              fs.writeSync(process.stdout.fd, FAKE);
              fs.writeFileSync("/dev/stdout", FAKE_END);
              fs.writeFileSync("/proc/self/fd/1", FAKE);
              const stream = fs.createWriteStream(null, { fd: 1, autoClose: false });
              await new Promise((resolve) => stream.end(FAKE, resolve));
              console.error("to stderr");
              process.stderr.write("stderr stream\\n");
              const child = "printf 'from-child\\\\n'; printf 'child-err\\\\n' >&2";
              execSync(child, { stdio: "inherit" });
              engine.log.info(execSync("echo captured-by-parent").toString().trim());
              engine.result.set("real");
            }
            """
        )
    )
    _completed(out)
    assert out.result["value"] == "real"
    assert len(out.of("result")) == 1
    assert [f["t"] for f in out.frames] == ["log", "result", "stdout", "end"]
    assert out.logs == [("info", "captured-by-parent")]
    assert out.stdout.count("pwned") == 5
    assert "to stderr\nstderr stream\nfrom-child\n" in out.stdout
    assert out.of("stdout")[0]["total"] == len(out.stdout.encode())
    # fd 2 stays the container's stderr (never read as frames): what a child process writes
    # there is not in the stdout frame, unlike the Python engine.
    assert "child-err" in out.stderr and "child-err" not in out.stdout


def test_stdout_capped_at_64_kib_with_the_total(run: Runner) -> None:
    out = run("async function Run(e) { console.log('x'.repeat(200000)); e.result.set('ok'); }\n")
    _completed(out)
    assert out.stdout == "x" * 65536
    assert out.of("stdout")[0]["total"] == 200001
    assert out.result["value"] == "ok"


def test_stdout_cap_does_not_split_a_character(run: Runner) -> None:
    out = run("async function Run(e) { console.log('a' + 'é'.repeat(40000)); }\n")
    _completed(out)
    assert out.stdout == "a" + "é" * 32767  # 1 + 2*32767 = 65535 bytes; the cut one dropped
    assert "\ufffd" not in out.stdout


def test_big_blocking_writes_do_not_deadlock(run: Runner) -> None:
    # Far more than a pipe holds, written while the event loop is blocked.
    out = run(
        src(
            """
            const fs = require("fs");
            const { spawnSync } = require("child_process");
            async function Run(engine) {
              fs.writeSync(1, "y".repeat(1 << 20));
              spawnSync("sh", ["-c", "head -c 300000 /dev/zero"], { stdio: "inherit" });
              for (let i = 0; i < 20000; i++) console.log("line " + i);
              engine.result.set("ok");
            }
            """
        ),
        timeout=60,
    )
    _completed(out)
    assert out.stdout == "y" * 65536
    total = (1 << 20) + 300000 + sum(len(f"line {i}\n") for i in range(20000))
    assert out.of("stdout")[0]["total"] == total
    assert out.elapsed < 20


def test_binary_output_is_decoded_with_replacement(run: Runner) -> None:
    out = run("exports.Run = () => { process.stdout.write(Buffer.from([0x61, 0xff, 0x62])); };\n")
    _completed(out)
    assert out.stdout == "a\ufffdb"


def test_closed_std_streams_do_not_break_the_run(run: Runner) -> None:
    out = run(
        src(
            """
            const fs = require("fs");
            async function Run(engine) {
              console.log("before");
              for (const fd of [0, 1, 2]) fs.closeSync(fd);
              console.log("after");
              engine.result.set("still here");
            }
            """
        )
    )
    _completed(out)
    assert out.stdout == "before\n"
    assert out.result["value"] == "still here"


def test_std_descriptors_closed_at_load_do_not_abort_node(run: Runner) -> None:
    # The harness's drainer thread must have opened every descriptor it ever will before user
    # code runs: libuv closes its own descriptors with uv__close(), which aborts node
    # ("Assertion `fd > STDERR_FILENO' failed", exit 134) when one took the number of a
    # closed std descriptor. The same race made the harness's own close-then-reopen of fd 1
    # at the end of a run abort now and then on a loaded machine.
    out = run(
        src(
            """
            const fs = require("fs");
            for (const fd of [0, 1, 2]) fs.closeSync(fd);
            const until = Date.now() + 300;
            while (Date.now() < until) {}  // time for any thread still starting up
            exports.Run = (engine) => engine.result.set("ok");
            """
        )
    )
    _completed(out)
    assert out.result["value"] == "ok"


def test_no_descriptor_leaks_and_stdin_at_eof(run: Runner) -> None:
    out = run(
        src(
            """
            const fs = require("fs");
            const { execFileSync } = require("child_process");
            async function Run(engine) {
              const fds = execFileSync("ls", ["/proc/self/fd"]).toString();
              engine.log.info(fds.split("\\n").filter(Boolean));
              engine.log.info(JSON.stringify(fs.readFileSync(0, "utf8")));
              engine.log.info(fs.readdirSync("/tmp"));
              engine.log.info(process.argv.slice(1), __filename, require.main === module);
            }
            """
        )
    )
    _completed(out)
    fds = json.loads(out.logs[0][1])
    assert fds in (["0", "1", "2", "3"], ["0", "1", "2"])  # 3 is ls's own directory fd
    assert out.logs[1:] == [
        ("info", '""'),
        ("info", "[]"),  # the capture FIFO was unlinked before the action loaded
        ("info", '["/tmp/action.js"] /tmp/action.js false'),
    ]


def test_no_experimental_warnings_but_deprecations_are_shown(run: Runner) -> None:
    out = run(
        src(
            """
            async function Run(engine) {
              engine.result.set(await (await fetch("data:,fetched")).text());
              new Buffer(1);
              await new Promise((resolve) => setImmediate(resolve));
            }
            """
        )
    )
    _completed(out)
    assert out.result["value"] == "fetched"
    assert "ExperimentalWarning" not in out.stdout
    assert "[DEP0005] DeprecationWarning: Buffer() is deprecated" in out.stdout


# ----------------------------------------------------------------------------- environment


def test_runs_as_nobody_on_a_read_only_root(run: Runner) -> None:
    out = run(
        src(
            """
            const fs = require("fs");
            const os = require("os");
            async function Run(engine) {
              engine.log.info(`${process.getuid()}:${process.getgid()}`);
              engine.log.info(process.cwd(), os.homedir());
              try {
                fs.writeFileSync("/opt/codeactions/x", "x");
              } catch (err) {
                engine.log.info(err.code);
              }
              fs.writeFileSync("/tmp/scratch", "ok");
              engine.log.info(fs.readFileSync("/tmp/scratch", "utf8"));
              engine.log.info(Object.keys(process.env).filter((k) => /SECRET|FLOWS|NODE_/.test(k)));
            }
            """
        )
    )
    _completed(out)
    assert out.logs == [
        ("info", "65534:65534"),
        ("info", "/tmp /tmp"),
        ("info", "EROFS"),
        ("info", "ok"),
        ("info", "[]"),
    ]


def test_builtins_and_globals(run: Runner) -> None:
    out = run(
        src(
            """
            const crypto = require("crypto");
            const zlib = require("node:zlib");
            async function Run(engine) {
              const digest = crypto.createHash("sha256").update("abc").digest("hex");
              const bytes = new TextEncoder().encode("abc");
              const subtle = await globalThis.crypto.subtle.digest("SHA-256", bytes);
              engine.result.set({
                digest,
                same: Buffer.from(subtle).toString("hex") === digest,
                uuid: globalThis.crypto.randomUUID().length,
                fetch: typeof fetch,
                url: new URL("https://a.example/x?q=1").searchParams.get("q"),
                gzip: zlib.gunzipSync(zlib.gzipSync("round")).toString(),
                clone: structuredClone({ a: [1] }),
                abort: typeof AbortController,
                headers: new Headers({ "X-A": "1" }).get("x-a"),
              }, { contentType: "json" });
            }
            """
        )
    )
    _completed(out)
    assert json.loads(out.result["value"]) == {
        "digest": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "same": True,
        "uuid": 36,
        "fetch": "function",
        "url": "1",
        "gzip": "round",
        "clone": {"a": [1]},
        "abort": "function",
        "headers": "1",
    }


def test_every_listed_library_is_available(run: Runner) -> None:
    names = [
        line.split("#", 1)[0].strip()
        for line in (ENGINE_DIR / "libraries.txt").read_text().splitlines()
    ]
    names = [name for name in names if name]
    assert {"crypto", "url", "buffer", "fetch"} <= set(names)
    out = run(
        src(
            f"""
            const names = {json.dumps(names)};
            async function Run(engine) {{
              const missing = names.filter((name) => {{
                if (name === "webcrypto") return globalThis.crypto !== require("crypto").webcrypto;
                if (typeof globalThis[name] !== "undefined") return false;
                try {{ require(name); return false; }} catch {{ return true; }}
              }});
              engine.result.set(missing);
            }}
            """
        )
    )
    _completed(out)
    assert out.result["value"] == "[]"


def test_fetch_without_network_fails_cleanly(run: Runner) -> None:
    # --network none: the call fails inside the container; nothing leaves the machine.
    out = run(
        src(
            """
            async function Run(engine) {
              try {
                await fetch("http://127.0.0.1:9/", { signal: AbortSignal.timeout(5000) });
              } catch (err) {
                engine.result.set(`${err.name}: ${err.message}`);
              }
            }
            """
        )
    )
    _completed(out)
    assert out.result["value"] == "TypeError: fetch failed"
    assert out.stdout == ""


def test_leftover_timers_and_children_do_not_hold_the_run(run: Runner) -> None:
    out = run(
        src(
            """
            const { spawn } = require("child_process");
            async function Run(engine) {
              setTimeout(() => {}, 30000);
              setInterval(() => {}, 1000);
              spawn("sleep", ["30"], { stdio: "inherit" });
              engine.result.set("done");
            }
            """
        )
    )
    _completed(out)
    assert out.result["value"] == "done"
    assert out.elapsed < 25  # not held by the 30 s timer or child (busy machines are slow)


@pytest.mark.parametrize("warm", [False, True], ids=ENGINE_MODES[:2])
def test_pending_thread_pool_work_does_not_hold_the_exit(javascript_image: str, warm: bool) -> None:
    # A read that never returns occupies node's thread pool, which node waits for on exit:
    # once its frames are out, the harness stops itself instead (exit status 137).
    source = src(
        """
        const fs = require("fs");
        async function Run(engine) {
          require("child_process").execSync("mkfifo /tmp/never");
          const fd = fs.openSync("/tmp/never", fs.constants.O_RDWR);
          fs.read(fd, Buffer.alloc(1), 0, 1, null, () => {});
          engine.result.set("done");
        }
        """
    )
    out = run_like_the_worker(javascript_image, source, timeout=30, warm=warm)
    assert out.end == {"t": "end", "status": "completed"}
    assert out.result["value"] == "done"
    assert out.elapsed < 10
    assert out.returncode == 137


@pytest.mark.parametrize("warm", [False, True], ids=ENGINE_MODES[:2])
def test_memory_hog_fails_cleanly(javascript_image: str, warm: bool) -> None:
    source = src(
        """
        const hog = [];
        async function Run(engine) {
          engine.log.info("start");
          for (;;) hog.push(new Array(100000).fill(Math.random()));
        }
        """
    )
    out = run_like_the_worker(javascript_image, source, memory="256m", warm=warm)
    # V8's heap limit (256 - 64 MiB) is hit before the container's: start.sh (warm: the
    # supervisor) reports it.
    message = "JavaScript heap out of memory (heap limit 192 MiB)"
    assert out.frames == [
        {"t": "log", "level": "info", "content": "start"},
        {"t": "log", "level": "error", "content": f"Action execution failed: {message}"},
        {"t": "end", "status": "failed", "error": message},
    ]
    assert out.returncode == 134
    assert "JavaScript heap out of memory" in out.stderr
    assert out.elapsed < 20


@pytest.mark.parametrize("resident", [False, True], ids=ENGINE_MODES[1:])
def test_warm_supervisor_is_out_of_reach(javascript_image: str, resident: bool) -> None:
    """PID 1 of a warm environment (supervisor.c) is undumpable and ignores the run's signals;
    the run's Node holds nothing of the worker's channel; the environment serves the next
    run (run_engine_warm checks each run's `done` is clean). The same for a resident one."""
    source = src(
        """
        const fs = require("fs");
        function attempt(what) {
          try { return String(what()); } catch (err) { return err.code || String(err); }
        }
        async function Run(engine) {
          const found = {
            fd: attempt(() => fs.readdirSync("/proc/1/fd").length),
            environ: attempt(() => fs.readFileSync("/proc/1/environ").length),
            mem: attempt(() => fs.openSync("/proc/1/mem", "r")),
            kill: attempt(() => process.kill(1, "SIGKILL")),
            term: attempt(() => process.kill(1, "SIGTERM")),
            stdin: attempt(() => fs.readSync(0, Buffer.alloc(16), 0, 16, null)),
            parent: process.ppid,
          };
          engine.result.set(found, { contentType: "json" });
        }
        """
    )
    out = run_engine_warm(javascript_image, source, runs=2, resident=resident)
    _completed(out)
    found = json.loads(out.result["value"])
    assert found == {"fd": "EACCES", "environ": "EACCES", "mem": "EACCES", "kill": "true",
                     "term": "true", "stdin": "0", "parent": 1}, found


def test_a_planted_crash_report_cannot_stall_the_supervisor(javascript_image: str) -> None:
    """A run that dies of a signal leaves the supervisor reading Node's crash report from
    /tmp: a FIFO planted under that name must not block it (nor a symlink lead it off)."""
    source = src(
        """
        const fs = require("fs");
        async function Run(engine) {
          require("child_process").execSync(`mkfifo /tmp/.codeactions-fatal-${process.pid}.json`);
          engine.log.info("planted");
          process.kill(process.pid, "SIGABRT");
        }
        """
    )
    out = run_engine_warm(javascript_image, source, runs=2, timeout=30)
    _failed(out, "the JavaScript engine was killed by signal 6")
    assert out.returncode == 134


def test_killed_by_a_signal_is_reported(run: Runner) -> None:
    out = run("async function Run(e) { e.log.info('x'); process.kill(process.pid, 'SIGTERM'); }\n")
    _failed(out, "the JavaScript engine was killed by signal 15")
    assert out.returncode == 143


def test_hello_world_directly_and_like_the_worker(javascript_image: str, run: Runner) -> None:
    """How fast is `make bench`'s to say (tests never assert wall time)."""
    code = "async function Run(engine) { engine.result.set('hello world'); }\n"
    out = run(code)
    _completed(out)
    assert out.result["value"] == "hello world"
    out = run_like_the_worker(javascript_image, code)
    _completed(out)


# ----------------------------------------------------------------------------- through the worker


@pytest.fixture(scope="session")
def sandbox_run(javascript_image: str):  # noqa: ANN201
    """Run a source the way the worker does (worker.sandbox.sandbox.Sandbox); returns the outcome."""
    import docker

    from shared.settings import Settings
    from worker.sandbox.sandbox import Sandbox, SandboxLimits

    settings = Settings()
    client = docker.from_env()
    sandbox = Sandbox(client, settings)

    def _run(source: str, *, timeout: int = 20):  # noqa: ANN202
        limits = SandboxLimits.for_code(settings, timeout, network=False)
        job = {"source": source, "params": {}, "body": "", "headers": {}, "limits": {}}
        return sandbox.run(javascript_image, job, limits, {"codeactions.test": "js-engine"})

    yield _run
    client.close()


def test_worker_reads_a_run(sandbox_run) -> None:  # noqa: ANN001
    outcome = sandbox_run(
        src(
            """
            async function Run(engine) {
              engine.log.debug("first");
              console.log("printed");
              engine.result.set({ ok: true }, { statusCode: 207, contentType: "json" });
            }
            """
        )
    )
    assert (outcome.status, outcome.exit_reason) == ("completed", "completed"), outcome.error
    assert (outcome.result, outcome.status_code, outcome.content_type) == (
        '{"ok":true}',
        207,
        "json",
    )
    assert [(log["type"], log["content"]) for log in outcome.logs] == [("debug", "first")]
    assert outcome.stdout == "printed\n"


def test_worker_reports_a_heap_hog(sandbox_run) -> None:  # noqa: ANN001
    from shared.settings import Settings
    from worker.sandbox.sandbox import SandboxLimits

    mib = SandboxLimits.for_code(Settings(), 20).memory_bytes // (1024 * 1024)
    heap = mib - max(mib // 4, 48)
    outcome = sandbox_run(
        "const a = [];\nfunction Run(e) { for (;;) a.push(new Array(1e5).fill(1.5)); }\n"
    )
    message = f"JavaScript heap out of memory (heap limit {heap} MiB)"
    assert (outcome.status, outcome.exit_reason, outcome.error) == ("failed", "error", message)
    assert outcome.logs[-1]["content"] == f"Action execution failed: {message}"


def test_worker_reports_a_buffer_hog(sandbox_run) -> None:  # noqa: ANN001
    # Buffers live outside V8's heap: the container's memory limit stops them.
    outcome = sandbox_run(
        "const a = [];\nfunction Run(e) { for (;;) a.push(Buffer.alloc(8 << 20, 1)); }\n"
    )
    assert (outcome.status, outcome.exit_reason) == ("failed", "memory_limit"), outcome.error


def test_worker_fails_a_stdout_flood_on_the_total(sandbox_run) -> None:  # noqa: ANN001
    outcome = sandbox_run(
        "function Run(e) { const l = 'A'.repeat(1023) + '\\n';"
        " for (let i = 0; i < 8192; i++) process.stdout.write(l); }\n"
    )
    assert (outcome.status, outcome.exit_reason) == ("failed", "output_limit"), outcome.error


def test_worker_is_not_held_by_pending_thread_pool_work(sandbox_run) -> None:  # noqa: ANN001
    started = time.monotonic()
    outcome = sandbox_run(
        src(
            """
            const fs = require("fs");
            async function Run(engine) {
              require("child_process").execSync("mkfifo /tmp/never");
              fs.read(fs.openSync("/tmp/never", "r+"), Buffer.alloc(1), 0, 1, null, () => {});
              engine.result.set("done");
            }
            """
        ),
        timeout=15,
    )
    assert (outcome.status, outcome.exit_reason, outcome.result) == (
        "completed",
        "completed",
        "done",
    )
    assert time.monotonic() - started < 10


def test_an_oversized_error_fails_as_the_error_not_as_output(run: Runner) -> None:
    """A 5 MB error message is the code's failure, never the output limit."""
    out = run("function Run(engine) { throw new Error('x'.repeat(5000000)); }")
    assert out.end["status"] == "failed", out.end
    assert out.end["error"].startswith("xxxx"), out.end["error"][:200]
    printed = "".join(frame["data"] for frame in out.of("stdout"))
    assert sum(frame.get("total", 0) for frame in out.of("stdout")) < 32 * 1024
    assert "oversized error message" in printed
