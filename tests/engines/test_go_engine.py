"""The Go engine, item by item against SPEC.md ("The code a user writes") and
engines/PROTOCOL.md: compiled by worker/preparers/go_build.py's GoBuilder in a hardened container, then
run the way the worker runs it (worker.sandbox.sandbox.Sandbox) or, where the frames themselves are
checked, with `docker run` and the same hardening (tests/engines/conftest.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from textwrap import dedent, indent
from typing import Any

import pytest

from .conftest import ENGINE_MODES, RunOutput, run_engine

GO_TIMEOUT = 20
# Compile containers these tests start carry this label, so the checks that none is left
# behind never count a running platform's compiles (the test stack is up meanwhile).
TEST_LABELS = {"codeactions.test-compile": "1"}
OURS = {"label": "codeactions.test-compile"}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def settings():  # noqa: ANN201
    from shared.settings import Settings

    return Settings()


@pytest.fixture(scope="session")
def go_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("go-build-cache")


@pytest.fixture(scope="session")
def builder(docker_client, settings, go_image: str, go_cache_dir: Path):  # noqa: ANN001, ANN201
    from worker.preparers.go_build import GoBuilder

    return GoBuilder(docker_client, settings, go_cache_dir, image=go_image, labels=TEST_LABELS)


def _job(
    fields: dict[str, Any],
    source: str,
    params: dict[str, Any] | None = None,
    body: str = "",
    headers: dict[str, list[str]] | None = None,
    limits: dict[str, Any] | None = None,
) -> dict[str, Any]:
    job = {
        "source": source,
        "params": params or {},
        "body": body,
        "headers": headers or {},
        "limits": limits if limits is not None else {"log_content_max": 8000},
    }
    job.update(fields)
    return job


@pytest.fixture(params=ENGINE_MODES)
def run(request, docker_client, settings, builder, go_image: str) -> Callable[..., Any]:  # noqa: ANN001
    """Compile with the GoBuilder, then run as the worker does (a one-shot container, or a
    warm or resident environment bound to the action); returns a SandboxOutcome."""
    from worker.sandbox.sandbox import Sandbox, SandboxLimits
    from worker.warm.environment import WarmEnvironment
    from worker.warm.environments import split_job

    sandbox = Sandbox(docker_client, settings)
    labels = {"codeactions.test": "go-engine"}

    def _run(source: str, *, timeout: int = GO_TIMEOUT, **job_kwargs: Any):  # noqa: ANN202
        job = _job(builder.job_fields(source), source, **job_kwargs)
        limits = SandboxLimits.for_code(settings, timeout, network=False)
        if request.param == "one-shot":
            return sandbox.run(go_image, job, limits, labels)
        bind, run_job = split_job("go", job)
        if request.param == "resident":
            bind.update(resident=True, rss_max=limits.memory_bytes * 6 // 10)
        env = WarmEnvironment(sandbox, ("go-engine-test",), go_image, limits, labels, bind)
        try:
            env.start()
            outcome = env.run(run_job, limits)
            # Clean and reusable, unless the run broke the stream (then it is destroyed).
            assert env.drain() or outcome.exit_reason in ("output_limit", "protocol"), outcome
            return outcome
        finally:
            env.destroy()

    return _run


@pytest.fixture()
def run_raw(builder, go_image: str) -> Callable[..., RunOutput]:  # noqa: ANN001
    """Compile, then `docker run` the engine with the job: every frame, unfiltered."""

    def _run(source: str, **job_kwargs: Any) -> RunOutput:
        job = _job(builder.job_fields(source), source, **job_kwargs)
        return run_engine(go_image, raw_job=json.dumps(job).encode())

    return _run


def action(body: str, *imports: str, extra: str = "") -> str:
    """A complete action: package main, the imports, `extra` declarations and Run's body."""
    lines = "\n".join(f'\t"{name}"' for name in sorted({"codeactions", *imports}))
    run_body = indent(dedent(body).strip("\n"), "\t")
    return (
        f"package main\n\nimport (\n{lines}\n)\n\n{dedent(extra).strip()}\n\n"
        f"func Run(engine *codeactions.Engine) error {{\n{run_body}\n}}\n"
    )


def infos(outcome) -> list[str]:  # noqa: ANN001
    return [entry["content"] for entry in outcome.logs if entry["type"] == "info"]


def completed(outcome) -> None:  # noqa: ANN001
    assert outcome.status == "completed", (outcome.error, outcome.logs, outcome.stdout)
    assert outcome.exit_reason == "completed"


def failed_with(outcome, message: str) -> None:  # noqa: ANN001
    assert outcome.status == "failed", (outcome.result, outcome.logs)
    assert outcome.exit_reason == "error", (outcome.exit_reason, outcome.error)
    assert outcome.error == message, outcome.error
    assert outcome.logs[-1]["type"] == "error"
    assert outcome.logs[-1]["content"] == f"Action execution failed: {message}"


# ----------------------------------------------------------------------------- image


def test_image_tag_scheme_labels_and_config(docker_client, go_image: str) -> None:  # noqa: ANN001
    from worker.images import engine_image_tag

    assert go_image == engine_image_tag("go")
    repository, _, digest = go_image.partition(":")
    assert repository == "codeactions/engine-go"
    image = docker_client.images.get(go_image)
    assert image.labels["codeactions.engine"] == "go"
    assert image.labels["codeactions.hash"] == digest
    config = image.attrs["Config"]
    assert config["User"] == "65534:65534"
    assert config["WorkingDir"] == "/tmp"
    assert config["Entrypoint"] == ["/opt/codeactions/bin/launcher"]


# ----------------------------------------------------------------------------- params, body


def test_params_get_lookup_items(run) -> None:  # noqa: ANN001
    out = run(
        action(
            """
            engine.Log.Info(engine.Params.Get("name"))
            engine.Log.Info(fmt.Sprintf("%q", engine.Params.Get("missing")))
            v, ok := engine.Params.Lookup("name")
            engine.Log.Info(v, " ", ok)
            v, ok = engine.Params.Lookup("missing")
            engine.Log.Info(fmt.Sprintf("%q %v", v, ok))
            v, ok = engine.Params.Lookup("empty")
            engine.Log.Info(fmt.Sprintf("%q %v", v, ok))
            items, _ := json.Marshal(engine.Params.Items())
            engine.Log.Info(string(items))
            engine.Log.Info(engine.Params.Len(), engine.Params.Keys())
            return nil
            """,
            "encoding/json",
            "fmt",
        ),
        params={"name": "ana", "empty": "", "tags": ["first", "second"]},
    )
    completed(out)
    assert infos(out) == [
        "ana",
        '""',
        "ana true",
        '"" false',
        '"" true',
        '{"empty":"","name":"ana","tags":"first"}',  # only the first value of a list
        "3 [empty name tags]",
    ]


def test_body_stripped_and_empty(run) -> None:  # noqa: ANN001
    source = action(
        """
        engine.Log.Info(fmt.Sprintf("%q", engine.Body))
        engine.Log.Info(fmt.Sprintf("%q", engine.Request.Body))
        return nil
        """,
        "fmt",
    )
    out = run(source, body='  {"a": [1, 2]}\n ')
    completed(out)
    assert infos(out) == ['"{\\"a\\": [1, 2]}"'] * 2
    out = run(source, body="")
    completed(out)
    assert infos(out) == ['""', '""']


def test_body_json_decoding_example(run) -> None:  # noqa: ANN001
    out = run(
        action(
            """
            var data struct{ Name string `json:"name"`; Tags []string `json:"tags"` }
            if err := json.Unmarshal([]byte(engine.Body), &data); err != nil {
                return fmt.Errorf("invalid body: %w", err)
            }
            return engine.Result.Set(data, codeactions.WithContentType("json"))
            """,
            "encoding/json",
            "fmt",
        ),
        body='{"name": "ana", "tags": ["x"]}',
    )
    completed(out)
    assert json.loads(out.result) == {"name": "ana", "tags": ["x"]}
    assert out.content_type == "json"


# ----------------------------------------------------------------------------- headers


def test_headers(run) -> None:  # noqa: ANN001
    out = run(
        action(
            """
            h := engine.Header
            engine.Log.Info(h.Get("User-Agent"))
            engine.Log.Info(h.Get("user-agent"))
            engine.Log.Info(h.Get("X-MULTI"))
            engine.Log.Info(fmt.Sprintf("%q", h.Get("Missing")))
            engine.Log.Info(fmt.Sprintf("%q", h.Values("x-multi")))
            engine.Log.Info(fmt.Sprintf("%q", h.Values("missing")))
            v, ok := h.Lookup("x-empty")
            engine.Log.Info(fmt.Sprintf("%q %v", v, ok))
            items, _ := json.Marshal(h.Items())
            engine.Log.Info(string(items))
            engine.Log.Info(h.Len())
            return nil
            """,
            "encoding/json",
            "fmt",
        ),
        headers={"User-Agent": ["curl/8"], "X-Multi": ["one", "two"], "X-Empty": []},
    )
    completed(out)
    assert infos(out) == [
        "curl/8",
        "curl/8",  # names match without regard to case
        "one",  # first value
        '""',
        '["one" "two"]',
        "[]",
        '"" false',
        '{"User-Agent":["curl/8"],"X-Empty":[],"X-Multi":["one","two"]}',  # as received
        "3",
    ]


def test_request_groups_params_body_header_log(run) -> None:  # noqa: ANN001
    out = run(
        action(
            """
            r := engine.Request
            r.Log.Info(r.Params.Get("q"), "|", r.Body, "|", r.Header.Get("accept"))
            engine.Log.Info(r.Log == engine.Log, " ", r.Params.Get("q") == engine.Params.Get("q"))
            return nil
            """
        ),
        params={"q": "search"},
        body="payload",
        headers={"Accept": ["text/html"]},
    )
    completed(out)
    assert infos(out) == ["search|payload|text/html", "true true"]


# ----------------------------------------------------------------------------- logs


def test_log_levels_order_and_formatting(run) -> None:  # noqa: ANN001
    out = run(
        action(
            """
            engine.Log.Debug("first")
            engine.Log.Info("second ", 2)
            engine.Log.Error("third")
            engine.Log.Info(42)
            engine.Log.Info(map[string]int{"a": 1}, []string{"x", "y"})
            engine.Log.Infof("%s=%d", "n", 7)
            engine.Log.Debugf("%.2f", 1.5)
            engine.Log.Errorf("oops %v", errors.New("bad"))
            engine.Log.Info()
            return nil
            """,
            "errors",
        )
    )
    completed(out)
    assert [(e["type"], e["content"]) for e in out.logs] == [
        ("debug", "first"),
        ("info", "second 2"),
        ("error", "third"),  # an error log does not fail the run
        ("info", "42"),
        ("info", "map[a:1] [x y]"),  # fmt.Sprint of the arguments
        ("info", "n=7"),
        ("debug", "1.50"),
        ("error", "oops bad"),
        ("info", ""),
    ]


def test_log_truncated_at_8000_characters(run_raw) -> None:  # noqa: ANN001
    out = run_raw(
        action(
            """
            for _, n := range []int{7999, 8000, 8001} {
                engine.Log.Info(strings.Repeat("é", n))
            }
            engine.Log.Info(strings.Repeat("a", 20000))
            return nil
            """,
            "strings",
        )
    )
    assert out.end == {"t": "end", "status": "completed"}, out.frames
    lengths = [len(content) for _, content in out.logs]
    assert lengths == [7999, 8000, 8000, 8000]  # characters (runes), not bytes
    assert all(set(content) <= {"é", "a"} for _, content in out.logs)


def test_log_limit_from_job(run_raw) -> None:  # noqa: ANN001
    out = run_raw(
        action('engine.Log.Info("0123456789abcdef")\nreturn nil'),
        limits={"log_content_max": 10},
    )
    assert out.logs == [("info", "0123456789")]


def test_logs_from_goroutines_all_arrive(run) -> None:  # noqa: ANN001
    out = run(
        action(
            """
            var wg sync.WaitGroup
            for i := 0; i < 20; i++ {
                wg.Add(1)
                go func(i int) { defer wg.Done(); engine.Log.Info(i) }(i)
            }
            wg.Wait()
            return nil
            """,
            "sync",
        )
    )
    completed(out)
    assert sorted(int(c) for c in infos(out)) == list(range(20))


# ----------------------------------------------------------------------------- result


def test_string_result_kept_as_is(run) -> None:  # noqa: ANN001
    out = run(action('return engine.Result.Set("hello <b>world</b>")'))
    completed(out)
    assert (out.result, out.status_code, out.content_type) == ("hello <b>world</b>", 200, "text")


def test_non_string_results_json_encoded(run) -> None:  # noqa: ANN001
    extra = """
    type Item struct {
        Name  string `json:"name"`
        Count int    `json:"count"`
    }
    """
    cases = {
        "map": 'map[string]any{"ok": true, "n": 1.5, "html": "<b>"}',
        "struct": 'Item{Name: "x", Count: 2}',
        "slice": "[]int{1, 2, 3}",
        "int": "42",
        "nil": "nil",
        "bytes": '[]byte("raw bytes")',
        "chan": "make(chan int)",  # json cannot encode it: fmt.Sprint
        "error": 'errors.New("went wrong")',  # its message, not json's "{}"
    }
    results = {}
    for name, value in cases.items():
        imports = ("errors",) if name == "error" else ()
        out = run(action(f"return engine.Result.Set({value})", *imports, extra=extra))
        completed(out)
        results[name] = out.result
    assert json.loads(results["map"]) == {"ok": True, "n": 1.5, "html": "<b>"}
    assert "<b>" in results["map"]  # no HTML escaping
    assert results["struct"] == '{"name":"x","count":2}'
    assert results["slice"] == "[1,2,3]"
    assert results["int"] == "42"
    assert results["nil"] == "null"
    assert results["bytes"] == "raw bytes"
    assert results["chan"].startswith("0x")
    assert results["error"] == "went wrong"


def test_large_result_streams_through(run) -> None:  # noqa: ANN001
    out = run(action('return engine.Result.Set(strings.Repeat("r", 1536*1024))', "strings"))
    completed(out)
    assert out.result == "r" * 1536 * 1024


def test_result_over_output_cap_fails(run, settings) -> None:  # noqa: ANN001
    size = settings.sandbox_output_max_bytes + 1024
    out = run(action(f'return engine.Result.Set(strings.Repeat("r", {size}))', "strings"))
    assert out.status == "failed"
    assert out.exit_reason == "output_limit", (out.exit_reason, out.error)


def test_second_set_wins_with_status_and_content_type(run) -> None:  # noqa: ANN001
    out = run(
        action(
            """
            engine.Result.Set("first", codeactions.WithStatusCode(500))
            return engine.Result.Set(map[string]bool{"ok": true},
                codeactions.WithStatusCode(201), codeactions.WithContentType("json"))
            """
        )
    )
    completed(out)
    assert (out.result, out.status_code, out.content_type) == ('{"ok":true}', 201, "json")


def test_html_content_type_and_case(run) -> None:  # noqa: ANN001
    out = run(
        action('return engine.Result.Set("<p>hi</p>", codeactions.WithContentType(" HTML "))')
    )
    completed(out)
    assert (out.result, out.content_type) == ("<p>hi</p>", "html")


def test_no_set_gives_empty_result(run) -> None:  # noqa: ANN001
    out = run(action("return nil"))
    completed(out)
    assert (out.result, out.status_code, out.content_type) == ("", 200, "text")


def test_invalid_content_type_returned_fails(run) -> None:  # noqa: ANN001
    out = run(action('return engine.Result.Set("x", codeactions.WithContentType("xml"))'))
    failed_with(out, 'content type must be one of text, json, html; got "xml"')


def test_invalid_content_type_ignored_still_fails(run) -> None:  # noqa: ANN001
    out = run(
        action(
            """
            engine.Result.Set("kept")
            err := engine.Result.Set("x", codeactions.WithContentType("xml"))
            engine.Log.Info(err != nil, " ", engine.Result.Value())
            return nil
            """
        )
    )
    assert infos(out) == ["true kept"]
    failed_with(out, 'invalid result: content type must be one of text, json, html; got "xml"')


def test_invalid_set_then_valid_set_completes(run) -> None:  # noqa: ANN001
    out = run(
        action(
            """
            _ = engine.Result.Set("x", codeactions.WithStatusCode(99))
            return engine.Result.Set("fine", codeactions.WithStatusCode(404))
            """
        )
    )
    completed(out)
    assert (out.result, out.status_code) == ("fine", 404)


def test_invalid_status_code_fails(run) -> None:  # noqa: ANN001
    out = run(action('return engine.Result.Set("x", codeactions.WithStatusCode(600))'))
    failed_with(out, "status code must be an HTTP status (200-599); got 600")


# ----------------------------------------------------------------------------- failures


def test_returned_error_fails_run(run) -> None:  # noqa: ANN001
    out = run(
        action(
            """
            engine.Log.Info("before")
            engine.Result.Set("not sent")
            return fmt.Errorf("boom: %d", 42)
            """,
            "fmt",
        )
    )
    failed_with(out, "boom: 42")
    assert out.logs[0]["content"] == "before"
    assert out.result == ""


def test_panic_fails_run_with_message_and_trace(run) -> None:  # noqa: ANN001
    out = run(
        action(
            """
            engine.Log.Info("before")
            var items []int
            _ = items[3]
            return nil
            """
        )
    )
    failed_with(out, "panic: runtime error: index out of range [3] with length 0")
    assert out.logs[0]["content"] == "before"
    assert "action/main.go:" in out.stdout  # the stack trace, with paths relative to the action
    assert "/tmp/build" not in out.stdout


def test_panic_with_value(run) -> None:  # noqa: ANN001
    out = run(action('panic("boom")'))
    failed_with(out, "panic: boom")


def test_an_oversized_panic_fails_as_the_panic_not_as_output(run) -> None:  # noqa: ANN001
    """A 5 MB panic value is the code's failure, never the output limit: the message is cut,
    saying so, and what the runtime printed stays under the output cap."""
    out = run(action('panic(strings.Repeat("x", 5_000_000))', "strings"))
    assert out.status == "failed", (out.exit_reason, out.error[:200])
    assert out.exit_reason == "error", (out.exit_reason, out.error[:200])
    assert out.error.startswith("panic: xxxx") and len(out.error) <= 64 * 1024
    assert "oversized panic value of 5000007 bytes" in out.stdout and len(out.stdout) < 32 * 1024
    assert "action/main.go:" in out.stdout  # the stack is still there


def test_an_oversized_returned_error_fails_as_the_error(run) -> None:  # noqa: ANN001
    out = run(action('return errors.New(strings.Repeat("x", 5_000_000))', "errors", "strings"))
    assert out.status == "failed", (out.exit_reason, out.error[:200])
    assert out.exit_reason == "error", (out.exit_reason, out.error[:200])
    assert out.error.startswith("xxxx") and len(out.error) <= 64 * 1024


def test_panic_in_goroutine_reported_by_launcher(run) -> None:  # noqa: ANN001
    out = run(
        action(
            """
            fmt.Println("printed before")
            done := make(chan bool)
            go func() {
                var m map[string]int
                m["a"] = 1
                done <- true
            }()
            <-done
            return nil
            """,
            "fmt",
        )
    )
    failed_with(out, "panic: assignment to entry in nil map")
    assert out.stdout.startswith("printed before\n")
    assert "goroutine" in out.stdout


def test_stack_overflow_is_a_clean_failure(run) -> None:  # noqa: ANN001
    out = run(
        action(
            "return engine.Result.Set(depth(0))",
            extra="func depth(n int) int { return depth(n+1) + 1 }",
        )
    )
    failed_with(out, "fatal error: stack overflow")


def test_deadlock_is_reported(run) -> None:  # noqa: ANN001
    out = run(action("select {}"))
    failed_with(out, "fatal error: all goroutines are asleep - deadlock!")


def test_os_exit_fails_without_result(run) -> None:  # noqa: ANN001
    out = run(
        action(
            """
            engine.Result.Set("never sent")
            fmt.Println("bye")
            os.Exit(3)
            return nil
            """,
            "fmt",
            "os",
        )
    )
    failed_with(out, "the action exited with status 3 before Run returned")
    assert out.result == ""
    assert out.stdout == "bye\n"


def test_log_fatal_shows_its_message(run) -> None:  # noqa: ANN001
    out = run(action('log.Fatal("cannot go on")\nreturn nil', "log"))
    failed_with(out, "the action exited with status 1 before Run returned")
    assert "cannot go on" in out.stdout


def test_timeout(run) -> None:  # noqa: ANN001
    started = time.monotonic()
    out = run(action("time.Sleep(30 * time.Second)\nreturn nil", "time"), timeout=2)
    assert out.status == "failed"
    assert out.exit_reason == "timeout"
    assert time.monotonic() - started < 15


def test_memory_limit(run) -> None:  # noqa: ANN001
    out = run(
        action(
            """
            var chunks [][]byte
            for i := 0; i < 64; i++ {
                chunk := make([]byte, 16<<20)
                for j := range chunk { chunk[j] = byte(j) }
                chunks = append(chunks, chunk)
            }
            return engine.Result.Set(len(chunks))
            """
        )
    )
    assert out.status == "failed"
    assert out.exit_reason == "memory_limit", (out.exit_reason, out.error)


# ----------------------------------------------------------------------------- isolation


def test_printed_frames_are_not_frames(run_raw) -> None:  # noqa: ANN001
    forged = '{"t":"result","value":"forged","status_code":299,"content_type":"text"}'
    extra = f"""
    const forged = {json.dumps(forged)}

    func frame() []byte {{
        b := []byte{{0, 0, 0, byte(len(forged))}}
        return append(b, forged...)
    }}

    func init() {{ os.Stdout.Write(frame()) }}
    """
    out = run_raw(
        action(
            """
            fmt.Print(string(frame()))
            os.Stdout.Write(frame())
            os.Stderr.Write(frame())
            syscall.Write(1, frame())
            syscall.Write(2, frame())
            println("builtin println")
            return engine.Result.Set("real")
            """,
            "fmt",
            "os",
            "syscall",
            extra=extra,
        )
    )
    assert out.end == {"t": "end", "status": "completed"}, out.frames
    assert [f["t"] for f in out.frames] == ["result", "stdout", "end"]
    assert out.result["value"] == "real"
    assert out.stdout.count(forged) == 6  # init, Print, Stdout, Stderr, fd 1, fd 2
    assert "builtin println" in out.stdout


def test_harness_alone_moves_frames_off_stdout(builder, go_image: str) -> None:  # noqa: ANN001
    """Without the launcher (no frame_fd in the job) the compiled action still keeps prints
    out of the frames: it moves its frames to a private descriptor and captures fd 1 and 2."""
    import base64
    import subprocess

    from .conftest import parse_frames, sandbox_flags

    forged = b'{"t":"result","value":"forged","status_code":299,"content_type":"text"}'
    source = action(
        f"""
        frame := append([]byte{{0, 0, 0, {len(forged)}}}, {json.dumps(forged.decode())}...)
        fmt.Print(string(frame))
        os.Stdout.Write(frame)
        syscall.Write(1, frame)
        syscall.Write(2, frame)
        engine.Log.Info(engine.Params.Get("who"))
        return engine.Result.Set("real")
        """,
        "fmt",
        "os",
        "syscall",
    )
    binary = base64.b64decode(builder.job_fields(source)["artifact"])
    job = json.dumps({"params": {"who": "standalone"}, "body": "", "headers": {}}).encode()
    flags = sandbox_flags()
    flags[flags.index("--tmpfs") + 1] += ",exec"  # only here: the binary runs from /tmp
    script = (
        f"dd iflag=fullblock,count_bytes bs=65536 count={len(binary)} of=/tmp/a 2>/dev/null"
        " && chmod 500 /tmp/a && exec /tmp/a"
    )
    proc = subprocess.run(
        ["docker", "run", "-i", "--rm", *flags, "--entrypoint", "sh", go_image, "-c", script],
        input=binary + job,
        capture_output=True,
        timeout=60,
        check=False,
    )
    frames = parse_frames(proc.stdout)
    assert [f["t"] for f in frames] == ["log", "result", "stdout", "end"], frames
    assert frames[0]["content"] == "standalone"
    assert frames[1]["value"] == "real"
    assert frames[2]["data"] == (len(forged).to_bytes(4, "big") + forged).decode() * 4
    assert frames[3] == {"t": "end", "status": "completed"}
    assert proc.returncode == 0


def test_stdout_capped_at_64_kib(run) -> None:  # noqa: ANN001
    out = run(
        action(
            """
            for i := 0; i < 20; i++ {
                fmt.Print(strings.Repeat("x", 10000))
            }
            return engine.Result.Set("done")
            """,
            "fmt",
            "strings",
        )
    )
    completed(out)
    assert out.result == "done"
    kept, note = out.stdout[:65536], out.stdout[65536:]
    assert kept == "x" * 65536
    assert note == "\n[… 200000 bytes printed in all; the rest was cut]"


def test_runs_as_its_own_uid_with_writable_tmp_only(run) -> None:  # noqa: ANN001
    out = run(
        action(
            """
            engine.Log.Info(os.Getuid(), " ", os.Getgid())
            engine.Log.Info(os.WriteFile("/tmp/scratch", []byte("ok"), 0o600) == nil)
            engine.Log.Info(os.WriteFile("/opt/x", []byte("no"), 0o600) != nil)
            _, err := os.Stat("/tmp/action")
            engine.Log.Info(os.IsNotExist(err))
            return nil
            """,
            "os",
        )
    )
    completed(out)
    # The worker gives each sandbox a host uid (and gid) of its own (worker/sandbox/uids.py).
    from shared.settings import Settings
    from worker.sandbox.uids import SandboxUids

    ids = infos(out)[0]
    uid, gid = ids.split()
    assert uid == gid and f"{uid}:{gid}" in SandboxUids(Settings()), ids
    assert infos(out)[1:] == ["true", "true", "true"]


def test_standard_library_is_available(run) -> None:  # noqa: ANN001
    out = run(
        action(
            """
            req, err := http.NewRequest("GET", "https://example.com/a?b=c", nil)
            if err != nil { return err }
            sum := sha256.Sum256([]byte("x"))
            re := regexp.MustCompile(`b=(\\w)`)
            return engine.Result.Set(map[string]any{
                "host": req.URL.Host,
                "sum": hex.EncodeToString(sum[:4]),
                "match": re.FindStringSubmatch(req.URL.RawQuery)[1],
                "max": slices.Max([]int{3, 9, 2}),
            }, codeactions.WithContentType("json"))
            """,
            "crypto/sha256",
            "encoding/hex",
            "net/http",
            "regexp",
            "slices",
        )
    )
    completed(out)
    assert json.loads(out.result) == {
        "host": "example.com",
        "sum": "2d711642",
        "match": "c",
        "max": 9,
    }


def test_invalid_jobs_end_failed(go_image: str) -> None:
    out = run_engine(go_image, raw_job=b"not json")
    assert out.end["status"] == "failed"
    assert out.end["error"].startswith("invalid job:")
    out = run_engine(go_image, raw_job=json.dumps({"source": "package main"}).encode())
    assert out.end["status"] == "failed"
    assert "no artifact" in out.end["error"]


# ----------------------------------------------------------------------------- compiling


def test_compile_error_is_clean_and_cached(builder) -> None:  # noqa: ANN001
    from worker.preparers.preparer import PreparationError

    source = action("x := undefinedThing\nreturn nil")
    with pytest.raises(PreparationError) as info:
        builder.job_fields(source)
    message = str(info.value)
    assert message == (
        "main.go:10:2: declared and not used: x\nmain.go:10:7: undefined: undefinedThing"
    )
    compiles = builder.compiles
    started = time.monotonic()
    with pytest.raises(PreparationError) as again:
        builder.job_fields(source)
    assert time.monotonic() - started < 0.05
    assert builder.compiles == compiles
    assert str(again.value) == message


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "package other\n\nfunc Run() {}\n",
            "main.go:1:9: an action is package main, not package other",
        ),
        (
            "package main\n\nfunc Other() {}\n",
            "main.go: Run is not defined: an action defines "
            "func Run(engine *codeactions.Engine) error",
        ),
        (
            'package main\n\nimport "codeactions"\n\nfunc main() {}\n\n'
            "func Run(engine *codeactions.Engine) error { return nil }\n",
            "main.go:5:6: an action defines func Run(engine *codeactions.Engine) error, "
            "not func main (the build adds main)",
        ),
        ("package main\n\nfunc Run( {\n", "main.go:3:11: syntax error: unexpected {"),
    ],
)
def test_compile_errors_for_shape_of_action(builder, source: str, expected: str) -> None:  # noqa: ANN001
    from worker.preparers.preparer import PreparationError

    with pytest.raises(PreparationError) as info:
        builder.job_fields(source)
    assert str(info.value).startswith(expected), str(info.value)


def test_wrong_run_signature(builder) -> None:  # noqa: ANN001
    from worker.preparers.preparer import PreparationError

    source = 'package main\n\nimport "codeactions"\n\nfunc Run(engine *codeactions.Engine) {}\n'
    with pytest.raises(PreparationError) as info:
        builder.job_fields(source)
    assert str(info.value) == (
        "main.go:5:6: Run has type func(engine *codeactions.Engine), "
        "but an action defines func Run(engine *codeactions.Engine) error"
    )


@pytest.mark.parametrize("package", ["github.com/acme/lib", "acme/lib"])
def test_unavailable_import(builder, package: str) -> None:  # noqa: ANN001
    from worker.preparers.preparer import PreparationError

    with pytest.raises(PreparationError) as info:
        builder.job_fields(action("return nil", package))
    line = 4 if package < "codeactions" else 5
    assert str(info.value) == (
        f"main.go:{line}:2: package {package} is not available: "
        "an action can import the standard library and codeactions only"
    )


def test_compiled_once_per_source_memory_and_disk(  # noqa: ANN001
    docker_client, settings, builder, go_image: str, go_cache_dir: Path
) -> None:
    from worker.preparers.go_build import GoBuilder

    source = action('return engine.Result.Set("cached")')
    started = time.monotonic()
    fields = builder.job_fields(source)
    cold = time.monotonic() - started
    assert set(fields) == {"artifact"}
    compiles = builder.compiles
    started = time.monotonic()
    assert builder.job_fields(source) == fields
    assert time.monotonic() - started < 0.05
    assert builder.compiles == compiles
    key = builder.cache_key(source)
    assert (go_cache_dir / f"{key}.bin").is_file()
    assert not list(go_cache_dir.glob("*.tmp"))
    # Another worker process: same disk cache, empty memory cache.
    other = GoBuilder(docker_client, settings, go_cache_dir, image=go_image)
    started = time.monotonic()
    assert other.job_fields(source) == fields
    assert time.monotonic() - started < 0.05
    assert other.compiles == 0
    # The key covers the image: a new engine image compiles again.
    assert GoBuilder(docker_client, settings, go_cache_dir, image="x:1").cache_key(source) != key
    assert cold < 30


def test_concurrent_calls_compile_once(builder) -> None:  # noqa: ANN001
    source = action('return engine.Result.Set("concurrent")')
    compiles = builder.compiles
    results: list[dict[str, Any]] = []
    threads = [
        threading.Thread(target=lambda: results.append(builder.job_fields(source)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and all(r == results[0] for r in results)
    assert builder.compiles == compiles + 1


def _compile_containers_gone(docker_client) -> None:  # noqa: ANN001
    """A removal Docker has already begun may still be finishing."""
    deadline = time.monotonic() + 15
    while (left := docker_client.containers.list(all=True, filters=OURS, ignore_removed=True)):
        assert time.monotonic() < deadline, left
        time.sleep(0.2)


def test_compile_containers_are_removed(docker_client, builder) -> None:  # noqa: ANN001
    builder.job_fields(action('return engine.Result.Set("cleanup")'))
    _compile_containers_gone(docker_client)


def test_hello_world_end_to_end(run, builder) -> None:  # noqa: ANN001
    """Compiled once, then run (how fast is `make bench`'s to say)."""
    source = action('engine.Log.Info("hello")\nreturn engine.Result.Set("world")')
    builder.job_fields(source)  # compiled (and cached) first
    out = run(source)
    completed(out)
    assert (infos(out), out.result) == (["hello"], "world")


def test_compile_timeout_is_not_cached(  # noqa: ANN001
    docker_client, settings, go_image: str, tmp_path: Path
) -> None:
    from worker.preparers.go_build import CompileLimits, GoBuilder
    from worker.preparers.preparer import PreparationError

    source = action('return engine.Result.Set("slow")')
    hasty = GoBuilder(
        docker_client, settings, tmp_path, image=go_image, limits=CompileLimits(timeout=0.2),
        labels=TEST_LABELS,
    )
    with pytest.raises(PreparationError, match=r"^compilation timed out after 0.2 s$"):
        hasty.job_fields(source)
    assert list(tmp_path.iterdir()) == []
    _compile_containers_gone(docker_client)
    patient = GoBuilder(docker_client, settings, tmp_path, image=go_image)
    assert set(patient.job_fields(source)) == {"artifact"}


def test_artifact_size_limit(  # noqa: ANN001
    docker_client, settings, go_image: str, tmp_path: Path
) -> None:
    from worker.preparers.go_build import CompileLimits, GoBuilder
    from worker.preparers.preparer import PreparationError

    small = GoBuilder(
        docker_client,
        settings,
        tmp_path,
        image=go_image,
        limits=CompileLimits(max_artifact_bytes=1024 * 1024),
    )
    source = action('return engine.Result.Set("big")')
    with pytest.raises(PreparationError, match=r"^the compiled action is .* MiB; at most 1.0 MiB"):
        small.job_fields(source)
    with pytest.raises(PreparationError):
        small.job_fields(source)
    assert small.compiles == 1  # deterministic: cached like a compile error


def test_memory_cache_is_bounded(tmp_path: Path) -> None:
    from worker.preparers.go_build import GoBuilder

    builder = GoBuilder(None, None, tmp_path, image="x:1", memory_cache_bytes=10)
    for key in ("a", "b", "c"):
        builder._lru_put(key, ("ok", "12345"))
    assert list(builder._lru) == ["b", "c"]
    builder._lru_put("huge", ("ok", "x" * 11))
    assert "huge" not in builder._lru


def test_disk_cache_is_pruned_oldest_first(tmp_path: Path) -> None:
    import os

    from worker.preparers.go_build import GoBuilder

    builder = GoBuilder(None, None, tmp_path, image="x:1", disk_cache_max_bytes=250)
    for age, name in enumerate(["new.bin", "mid.err", "old.bin"]):
        path = tmp_path / name
        path.write_bytes(b"x" * 100)
        os.utime(path, (1_000_000 - age * 10, 1_000_000 - age * 10))
    builder._prune_disk()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mid.err", "new.bin"]
