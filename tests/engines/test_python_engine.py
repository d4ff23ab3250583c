"""The Python engine, item by item against SPEC.md ("The code a user writes") and
engines/PROTOCOL.md, run in real hardened containers."""

from __future__ import annotations

import json
import struct
from textwrap import dedent

import pytest

from .conftest import Runner, parse_frames


def src(text: str) -> str:
    return dedent(text).lstrip("\n")


def _completed(out) -> None:  # noqa: ANN001
    assert out.end == {"t": "end", "status": "completed"}, (out.frames, out.stderr)
    assert out.returncode == 0


# ----------------------------------------------------------------------------- image


def test_image_tag_scheme_and_labels(python_image: str) -> None:
    import docker

    from worker.images import BASE_REPOSITORY, base_image_tag, engine_image_tag, engine_suite

    assert python_image == engine_image_tag("python")
    assert engine_suite("python") == "trixie"  # Python >= 3.12 (SPEC: the old runtime's 3.12)
    repository, _, digest = python_image.partition(":")
    assert repository == "codeactions/engine-python"
    assert len(digest) == 16 and int(digest, 16) >= 0
    client = docker.from_env()
    try:
        image = client.images.get(python_image)
        assert image.labels["codeactions.engine"] == "python"
        assert image.labels["codeactions.hash"] == digest
        base_tag = base_image_tag(suite="trixie")
        assert image.labels["codeactions.base_image"] == base_tag
        base = client.images.get(base_tag)
        assert base_tag.startswith(BASE_REPOSITORY + ":")
        assert base.labels["codeactions.hash"] == base_tag.partition(":")[2]
        assert base.labels["codeactions.base"] == "trixie"
        config = image.attrs["Config"]
        assert config["User"] == "65534:65534"
        assert config["WorkingDir"] == "/tmp"
        assert config["Entrypoint"][:2] == ["python3", "-I"]
    finally:
        client.close()


def test_ensure_images_is_cached(python_image: str) -> None:
    import time

    import docker

    from worker.images import ensure_images

    client = docker.from_env()
    try:
        started = time.monotonic()
        assert ensure_images(client, ["python"]) == {"python": python_image}
        assert time.monotonic() - started < 5
    finally:
        client.close()


# ----------------------------------------------------------------------------- params, body


def test_params(run: Runner) -> None:
    out = run(
        src(
            """
            def Run(engine):
                engine.log.info(repr(engine.params.get("name")))
                engine.log.info(repr(engine.params.get("missing")))
                engine.log.info(repr(sorted(engine.params.items())))
            """
        ),
        params={"name": "ana", "page": "2"},
    )
    _completed(out)
    assert out.logs == [
        ("info", "'ana'"),
        ("info", "None"),
        ("info", "[('name', 'ana'), ('page', '2')]"),
    ]


def test_body(run: Runner) -> None:
    code = src(
        """
        import json
        def Run(engine):
            engine.log.info(repr(engine.body))
            engine.log.info(repr(json.loads(engine.body or "{}")))
        """
    )
    out = run(code, body='{"a": [1, 2]}')
    _completed(out)
    assert out.logs == [("info", """'{"a": [1, 2]}'"""), ("info", "{'a': [1, 2]}")]
    # Stripped even if the worker did not strip it.
    out = run(code, body='  \n{"a": 1}\n ')
    assert out.logs[0] == ("info", """'{"a": 1}'""")


def test_a_large_escaped_body_reaches_the_code(run: Runner) -> None:
    # 1 MiB of control characters is ~6 MiB of JSON-escaped job: more than a control frame
    # of a warm environment's supervisor may be (the job is not one).
    out = run("def Run(engine):\n    engine.result.set(str(len(engine.body)))\n",
              body="\x01" * (1024 * 1024))
    assert out.end == {"t": "end", "status": "completed"}, out.frames
    assert out.result["value"] == str(1024 * 1024)


@pytest.mark.parametrize("job_body", ["", None, "missing"])
def test_empty_body_is_empty_string(run: Runner, job_body: str | None) -> None:
    job: dict = {"source": "def Run(engine):\n    engine.log.info(repr(engine.body))\n"}
    if job_body != "missing":
        job["body"] = job_body
    out = run(raw_job=json.dumps(job).encode())
    _completed(out)
    assert out.logs == [("info", "''")]


# ----------------------------------------------------------------------------- headers


def test_header(run: Runner) -> None:
    out = run(
        src(
            """
            def Run(engine):
                h = engine.header
                engine.log.info(repr(h.get("User-Agent")))
                engine.log.info(repr(h.get("user-agent")))
                engine.log.info(repr(h.get("X-Multi")))
                engine.log.info(repr(h.get("X-Missing")))
                engine.log.info(repr(dict(h.items())))
                engine.log.info(type(h).__name__ + " " + type(engine.params).__name__)
            """
        ),
        headers={"User-Agent": ["curl/8"], "X-Multi": ["first", "second"]},
    )
    _completed(out)
    assert out.logs == [
        ("info", "'curl/8'"),
        ("info", "'curl/8'"),
        ("info", "'first'"),
        ("info", "''"),
        ("info", "{'User-Agent': ['curl/8'], 'X-Multi': ['first', 'second']}"),
        ("info", "Header Params"),
    ]


def test_request_groups_the_same_objects(run: Runner) -> None:
    out = run(
        src(
            """
            def Run(engine):
                r = engine.request
                assert r.params is engine.params
                assert r.header is engine.header
                assert r.log is engine.log
                assert r.body == engine.body == "b"
                r.log.info(r.params.get("p") + r.header.get("h"))
            """
        ),
        params={"p": "P"},
        body="b",
        headers={"h": ["H"]},
    )
    _completed(out)
    assert out.logs == [("info", "PH")]


# ----------------------------------------------------------------------------- logs


def test_log_order_levels_and_str(run: Runner) -> None:
    out = run(
        src(
            """
            def Run(engine):
                engine.log.debug("one")
                engine.log.info({"two": 2})
                engine.log.error(3)
                engine.log.info(None)
                engine.log.debug("five")
            """
        )
    )
    _completed(out)
    assert out.logs == [
        ("debug", "one"),
        ("info", "{'two': 2}"),
        ("error", "3"),
        ("info", "None"),
        ("debug", "five"),
    ]
    # Logs come first, then the result, then end.
    assert [f["t"] for f in out.frames] == ["log"] * 5 + ["result", "end"]


def test_log_cut_at_8000_chars(run: Runner) -> None:
    out = run(
        src(
            """
            def Run(engine):
                for n in (7999, 8000, 8001, 20000):
                    engine.log.info("é" * n)
            """
        )
    )
    _completed(out)
    assert [len(content) for _, content in out.logs] == [7999, 8000, 8000, 8000]
    assert all(set(content) == {"é"} for _, content in out.logs)


def test_log_content_max_from_limits(run: Runner) -> None:
    out = run(
        "def Run(engine):\n    engine.log.info('abcdefghij')\n", limits={"log_content_max": 4}
    )
    _completed(out)
    assert out.logs == [("info", "abcd")]


# ----------------------------------------------------------------------------- result


def test_no_set_gives_empty_result(run: Runner) -> None:
    out = run("def Run(engine):\n    pass\n")
    _completed(out)
    assert out.result == {"t": "result", "value": "", "status_code": 200, "content_type": "text"}
    assert out.stdout == ""
    assert [f["t"] for f in out.frames] == ["result", "end"]


def test_str_result_kept_as_is(run: Runner) -> None:
    out = run("def Run(engine):\n    engine.result.set('{not json')\n")
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
        ('{"ok": True, "n": [1, 2.5, None]}', '{"ok": true, "n": [1, 2.5, null]}'),
        ("[1, 'a']", '[1, "a"]'),
        ("42", "42"),
        ("None", "null"),
        ("True", "true"),
        ("{1, 2}", "{1, 2}"),  # not JSON-serialisable: str()
    ],
)
def test_non_str_result_json_encoded(run: Runner, expr: str, expected: str) -> None:
    out = run(f"def Run(engine):\n    engine.result.set({expr}, content_type='json')\n")
    _completed(out)
    assert out.result["value"] == expected


def test_second_set_wins_with_status_and_content_type(run: Runner) -> None:
    out = run(
        src(
            """
            def Run(engine):
                engine.result.set({"first": 1}, status_code=201, content_type="json")
                engine.result.set("<b>second</b>", status_code=418, content_type="html")
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


def test_spec_example(run: Runner) -> None:
    out = run(
        src(
            """
            import json

            def Run(engine):
                name = engine.params.get("name")
                data = json.loads(engine.body or "{}")
                agent = engine.header.get("User-Agent")
                engine.log.info(f"hello {name} {data} {agent}")
                engine.result.set({"ok": True}, status_code=201, content_type="json")
            """
        ),
        params={"name": "ana"},
        headers={"User-Agent": ["curl/8"]},
    )
    _completed(out)
    assert out.logs == [("info", "hello ana {} curl/8")]
    assert out.result == {
        "t": "result",
        "value": '{"ok": true}',
        "status_code": 201,
        "content_type": "json",
    }


def test_invalid_content_type_raises(run: Runner) -> None:
    out = run("def Run(engine):\n    engine.result.set('x', content_type='xml')\n")
    assert out.end["status"] == "failed"
    assert "content_type must be one of text, json, html" in out.end["error"]
    assert out.logs[-1][0] == "error"
    assert out.logs[-1][1].startswith("Action execution failed: content_type must be")
    assert out.result is None
    # Catchable: the earlier result survives.
    out = run(
        src(
            """
            def Run(engine):
                engine.result.set("kept")
                try:
                    engine.result.set("lost", content_type="application/json")
                except ValueError as exc:
                    engine.log.error(type(exc).__name__)
            """
        )
    )
    _completed(out)
    assert out.logs == [("error", "ValueError")]
    assert out.result["value"] == "kept"


# ----------------------------------------------------------------------------- failures


def test_exception_fails_the_run(run: Runner) -> None:
    out = run(
        src(
            """
            def Run(engine):
                engine.log.info("before")
                engine.result.set("partial")
                raise RuntimeError("boom")
            """
        )
    )
    assert out.logs == [("info", "before"), ("error", "Action execution failed: boom")]
    assert out.end == {"t": "end", "status": "failed", "error": "boom"}
    assert out.result is None
    assert "RuntimeError: boom" in out.stdout  # the traceback, for the user
    assert 'File "<action>", line 4, in Run' in out.stdout
    assert "harness" not in out.stdout
    assert out.returncode == 1


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (
            "import sys\ndef Run(engine):\n    sys.exit(0)\n",
            "SystemExit: exit() called with status 0",
        ),
        ("def Run(engine):\n    exit()\n", "SystemExit: exit() called"),
        ("raise SystemExit(3)\n", "SystemExit: exit() called with status 3"),
        ("def Run(engine):\n    raise KeyboardInterrupt\n", "KeyboardInterrupt"),
    ],
)
def test_exit_is_a_failure(run: Runner, code: str, message: str) -> None:
    out = run(code)
    assert out.end == {"t": "end", "status": "failed", "error": message}
    assert out.logs[-1] == ("error", f"Action execution failed: {message}")


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("def Run(engine)\n    pass\n", "expected ':'"),
        ("x = 1\n", "Run(engine) is not defined"),
        ("Run = 3\n", "Run must be a function"),
        ("import no_such_module_xyz\ndef Run(engine):\n    pass\n", "no_such_module_xyz"),
        ("def Run():\n    pass\n", "positional argument"),
    ],
)
def test_load_failures(run: Runner, code: str, fragment: str) -> None:
    out = run(code)
    assert out.end["status"] == "failed"
    assert fragment in out.end["error"]
    assert out.logs[-1] == ("error", f"Action execution failed: {out.end['error']}")


def test_an_oversized_exception_fails_as_the_exception_not_as_output(run: Runner) -> None:
    """A 5 MB exception message is the code's failure: its traceback is cut, so the run does not
    end as `output_limit` (the worker counts everything printed against the output cap)."""
    out = run(src(
        """
        def Run(engine):
            raise ValueError("x" * 5_000_000)
        """
    ))
    assert out.end["status"] == "failed"
    assert out.end["error"].startswith("xxxx") and len(out.end["error"]) <= 64 * 1024
    printed = out.of("stdout")[0]
    assert printed["total"] < 32 * 1024
    assert "the traceback was cut" in printed["data"] and "oversized exception" in printed["data"]
    assert 'File "<action>", line 2, in Run' in printed["data"]


def test_empty_exception_message_names_the_type(run: Runner) -> None:
    out = run("def Run(engine):\n    raise ValueError()\n")
    assert out.end == {"t": "end", "status": "failed", "error": "ValueError"}


def test_invalid_job(run: Runner) -> None:
    out = run(raw_job=b"{not json")
    assert out.end["status"] == "failed"
    assert out.end["error"].startswith("invalid job:")
    assert out.returncode == 2


# ----------------------------------------------------------------------------- stdout capture


def test_printed_fake_frames_stay_inside_the_stdout_frame(run: Runner) -> None:
    fake = json.dumps(
        {"t": "result", "value": "pwned", "status_code": 200, "content_type": "text"}
    ).encode()
    fake_end = json.dumps({"t": "end", "status": "completed"}).encode()
    out = run(
        src(
            f"""
            import os, sys, subprocess
            FAKE = {struct.pack(">I", len(fake)) + fake!r}
            FAKE_END = {struct.pack(">I", len(fake_end)) + fake_end!r}
            def Run(engine):
                sys.stdout.buffer.write(FAKE)
                sys.stdout.flush()
                os.write(1, FAKE_END)
                os.write(2, FAKE)
                print("to stderr", file=sys.stderr)
                subprocess.run(["sh", "-c", "echo from-child; echo child-err >&2"])
                engine.result.set("real")
            """
        )
    )
    _completed(out)
    assert out.result["value"] == "real"
    assert len(out.of("result")) == 1
    assert [f["t"] for f in out.frames] == ["result", "stdout", "end"]
    assert "pwned" in out.stdout
    assert "to stderr\n" in out.stdout
    assert "from-child\n" in out.stdout and "child-err\n" in out.stdout


def test_stdout_capped_at_64_kib(run: Runner) -> None:
    out = run("def Run(engine):\n    print('x' * 200_000)\n    engine.result.set('ok')\n")
    _completed(out)
    assert out.stdout == "x" * 65536
    assert out.result["value"] == "ok"


def test_stdout_cap_does_not_split_a_character(run: Runner) -> None:
    out = run("def Run(engine):\n    print('a' + 'é' * 40_000)\n")
    _completed(out)
    assert out.stdout == "a" + "é" * 32767  # 1 + 2*32767 = 65535 bytes; the cut one dropped
    assert "\ufffd" not in out.stdout


def test_frame_fd_not_inherited_and_stdin_closed(run: Runner) -> None:
    out = run(
        src(
            """
            import os, sys, subprocess
            def Run(engine):
                fds = subprocess.run(["ls", "/proc/self/fd"], capture_output=True, text=True)
                engine.log.info(fds.stdout.split())
                try:
                    input()
                except EOFError:
                    engine.log.info("eof")
                engine.log.info(sys.argv)
                engine.log.info(__name__)
            """
        )
    )
    _completed(out)
    fds = out.logs[0][1]
    assert fds in ("['0', '1', '2', '3']", "['0', '1', '2']")  # 3 is ls's own directory fd
    assert out.logs[1:] == [("info", "eof"), ("info", "['action']"), ("info", "action")]


# ----------------------------------------------------------------------------- environment


def test_runs_as_nobody_on_a_read_only_root(run: Runner) -> None:
    out = run(
        src(
            """
            import os
            def Run(engine):
                engine.log.info(f"{os.getuid()}:{os.getgid()}")
                engine.log.info(os.getcwd())
                try:
                    open("/opt/codeactions/x", "w")
                except OSError as exc:
                    engine.log.info(type(exc).__name__)
                with open("/tmp/scratch", "w") as fh:
                    fh.write("ok")
                engine.log.info(open("/tmp/scratch").read())
                engine.log.info(sorted(k for k in os.environ if "SECRET" in k or "FLOWS" in k))
            """
        )
    )
    _completed(out)
    assert out.logs == [
        ("info", "65534:65534"),
        ("info", "/tmp"),
        ("info", "OSError"),
        ("info", "ok"),
        ("info", "[]"),
    ]


def test_curated_packages_import(run: Runner) -> None:
    out = run(
        src(
            """
            import datetime
            import requests, httpx, pydantic, dateutil.parser, pytz
            import yaml, bs4, xmltodict, jwt

            class Item(pydantic.BaseModel):
                name: str
                n: int

            def Run(engine):
                item = Item(name="a", n="3")
                when = dateutil.parser.isoparse("2024-05-01T10:00:00Z")
                local = when.astimezone(pytz.timezone("America/Sao_Paulo"))
                soup = bs4.BeautifulSoup("<p>hi</p>", "html.parser")
                engine.result.set({
                    "requests": requests.__version__,
                    "httpx": httpx.__version__,
                    "item": item.n,
                    "hour": local.hour,
                    "yaml": yaml.safe_load("a: 1"),
                    "soup": soup.p.text,
                    "xml": xmltodict.parse("<a>1</a>"),
                    "jwt": jwt.encode({"x": 1}, "k", algorithm="HS256").count("."),
                }, content_type="json")
            """
        )
    )
    _completed(out)
    value = json.loads(out.result["value"])
    assert value["item"] == 3
    assert value["hour"] == 7
    assert value["yaml"] == {"a": 1}
    assert value["soup"] == "hi"
    assert value["xml"] == {"a": "1"}
    assert value["jwt"] == 2


def test_requests_without_network_fails_cleanly(run: Runner) -> None:
    # --network none: the call fails inside the container; nothing leaves the machine.
    out = run(
        src(
            """
            import requests
            def Run(engine):
                try:
                    requests.get("http://127.0.0.1:9/", timeout=2)
                except requests.RequestException as exc:
                    engine.result.set(type(exc).__name__)
            """
        )
    )
    _completed(out)
    assert out.result["value"] == "ConnectionError"


def test_async_run(run: Runner) -> None:
    out = run(
        src(
            """
            import asyncio
            async def Run(engine):
                await asyncio.sleep(0)
                engine.result.set("async ok")
            """
        )
    )
    _completed(out)
    assert out.result["value"] == "async ok"


def test_user_threads_do_not_hold_the_run(run: Runner) -> None:
    out = run(
        src(
            """
            import threading, time
            def Run(engine):
                threading.Thread(target=time.sleep, args=(30,)).start()
                engine.result.set("done")
            """
        )
    )
    _completed(out)
    assert out.elapsed < 10


def test_hello_world_is_fast(run: Runner) -> None:
    out = run("def Run(engine):\n    engine.result.set('hello world')\n")
    _completed(out)
    assert out.result["value"] == "hello world"
    assert out.elapsed < 5  # docker run wall time, typically ~0.35 s


def test_parse_frames_rejects_stray_bytes() -> None:
    good = json.dumps({"t": "end", "status": "completed"}).encode()
    frame = len(good).to_bytes(4, "big") + good
    assert parse_frames(frame) == [{"t": "end", "status": "completed"}]
    with pytest.raises(ValueError):
        parse_frames(frame + b"hi")


def test_remove_stale_images(python_image: str) -> None:
    import uuid

    import docker

    from worker.images import base_image_tag, remove_stale_images

    # A repository of this test's own: the real engine repositories may hold the images of
    # another checkout using the same Docker engine, which this test must not remove.
    repository = f"codeactions/engine-test-{uuid.uuid4().hex[:8]}"
    current, stale = f"{repository}:current", f"{repository}:0000000000000000"
    client = docker.from_env()
    try:
        client.images.get(python_image).tag(repository, "current")
        client.images.get(python_image).tag(repository, "0000000000000000")
        removed = remove_stale_images(client, [current])
        assert removed == [stale]
        assert client.images.get(current) and client.images.get(python_image)
        assert client.images.get(base_image_tag())
    finally:
        for tag in (current, stale):
            try:
                client.images.remove(tag)
            except docker.errors.ImageNotFound:
                pass
        client.close()


def test_result_is_readable_and_tampering_cannot_break_frames(run: Runner) -> None:
    out = run(
        src(
            """
            def Run(engine):
                engine.result.set([1], status_code=202, content_type="json")
                engine.log.info(engine.result.value)
                engine.log.info(engine.result.status_code)
                engine.result._status_code = object()
            """
        )
    )
    assert out.logs[:2] == [("info", "[1]"), ("info", "202")]
    assert out.end["status"] == "failed"
    assert out.end["error"].startswith("invalid result:")


def test_exception_with_broken_str(run: Runner) -> None:
    out = run(
        src(
            """
            class Weird(Exception):
                def __str__(self):
                    raise RuntimeError("no")
            def Run(engine):
                raise Weird()
            """
        )
    )
    assert out.end == {"t": "end", "status": "failed", "error": "Weird"}
