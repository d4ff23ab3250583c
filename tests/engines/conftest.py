"""Engine tests: build the images for real, then run the harness in a hardened container the
way the worker does (job on stdin, frames on stdout)."""

from __future__ import annotations

import functools
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from worker.wire.frames import MARKER_BIT, FrameError, decode_all


def sandbox_flags(memory: str = "128m", init: bool = False) -> list[str]:
    """`docker run` flags for an engine container: the worker's own hardening
    (worker.sandbox.sandbox.Sandbox.policy, so tests/engines/test_hardening.py covers it), with
    a smaller memory default, no network, and without the worker's init unless asked (the engine
    is PID 1, as in a warm environment)."""
    from shared.settings import Settings
    from worker.sandbox.hardening import SANDBOX_USER
    from worker.sandbox.sandbox import Sandbox, SandboxLimits, parse_size

    settings = Settings()
    limits = SandboxLimits.for_code(settings, 60, network=False)
    limits.memory_bytes = parse_size(memory)
    # nobody: what the engine tests check the run sees (the worker gives each sandbox a uid
    # of its own; the integration tests run every engine that way).
    return Sandbox(None, settings).policy(limits, init=init, user=SANDBOX_USER).run_flags()


def init_args(image: str) -> list[str]:
    """What follows the image in `docker run` with `sandbox_flags(init=True)`: the image's own
    entrypoint, behind the worker's init (worker/sandbox/hardening.py, INIT)."""
    entrypoint = json.loads(subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Entrypoint}}", image],
        capture_output=True, text=True, timeout=60, check=True).stdout)
    return ["--", *entrypoint]


def parse_frames(data: bytes) -> list[dict[str, Any]]:
    """Every frame on an engine's stdout; nothing else is allowed there (worker/wire)."""
    frames = decode_all(data)
    for frame in frames:
        if "t" not in frame:
            raise FrameError(f"not a frame: {frame!r}")
    return frames


@dataclass
class RunOutput:
    frames: list[dict[str, Any]]
    returncode: int
    stderr: str
    elapsed: float
    raw: bytes = field(repr=False, default=b"")

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["t"] == kind]

    @property
    def logs(self) -> list[tuple[str, str]]:
        return [(f["level"], f["content"]) for f in self.of("log")]

    @property
    def result(self) -> dict[str, Any] | None:
        results = self.of("result")
        assert len(results) <= 1, f"more than one result frame: {results}"
        return results[0] if results else None

    @property
    def stdout(self) -> str:
        chunks = self.of("stdout")
        assert len(chunks) <= 1, f"more than one stdout frame: {chunks}"
        return chunks[0]["data"] if chunks else ""

    @property
    def end(self) -> dict[str, Any]:
        assert self.frames, f"no frames; stderr={self.stderr!r}"
        last = self.frames[-1]
        assert last["t"] == "end", f"last frame is not end: {self.frames}"
        assert len(self.of("end")) == 1
        return last


Runner = Callable[..., RunOutput]


@pytest.fixture(scope="session")
def docker_client(platform):  # noqa: ANN001, ANN201
    """The platform fixture brings the Docker engine up (installing it when missing), so
    engine tests never skip on a fresh machine: no engine is a failure, not a skip."""
    import docker

    client = docker.from_env()
    client.ping()
    yield client
    client.close()


def _engine_image(client, language: str) -> str:  # noqa: ANN001
    from worker.images import ensure_images

    return ensure_images(client, [language])[language]


@pytest.fixture(scope="session")
def python_image(docker_client) -> str:  # noqa: ANN001
    return _engine_image(docker_client, "python")


@pytest.fixture(scope="session")
def javascript_image(docker_client) -> str:  # noqa: ANN001
    return _engine_image(docker_client, "javascript")


@pytest.fixture(scope="session")
def go_image(docker_client) -> str:  # noqa: ANN001
    return _engine_image(docker_client, "go")


def _job(
    params: dict[str, Any] | None,
    body: str,
    headers: dict[str, list[str]] | None,
    limits: dict[str, Any] | None,
    compat: str | None = None,
) -> dict[str, Any]:
    """A job as the worker sends it (engines/PROTOCOL.md), without the source; `compat` only
    when given (an engine must take a job without it as strict)."""
    job = {
        "params": params or {},
        "body": body,
        "headers": headers or {},
        "limits": limits if limits is not None else {"log_content_max": 8000},
    }
    if compat is not None:
        job["compat"] = compat
    return job


def run_engine(
    image: str,
    source: str | None = None,
    *,
    params: dict[str, Any] | None = None,
    body: str = "",
    headers: dict[str, list[str]] | None = None,
    limits: dict[str, Any] | None = None,
    raw_job: bytes | None = None,
    timeout: float = 60,
    compat: str | None = None,
    memory: str = "128m",
) -> RunOutput:
    if raw_job is None:
        job = {"source": source, **_job(params, body, headers, limits, compat)}
        raw_job = json.dumps(job).encode()
    started = time.monotonic()
    proc = subprocess.run(
        ["docker", "run", "-i", "--rm", *sandbox_flags(memory), image],
        input=raw_job,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    elapsed = time.monotonic() - started
    return RunOutput(
        frames=parse_frames(proc.stdout),
        returncode=proc.returncode,
        stderr=proc.stderr.decode("utf-8", "replace"),
        elapsed=elapsed,
        raw=proc.stdout,
    )


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def run_engine_warm(
    image: str,
    source: str | None = None,
    *,
    params: dict[str, Any] | None = None,
    body: str = "",
    headers: dict[str, list[str]] | None = None,
    limits: dict[str, Any] | None = None,
    raw_job: bytes | None = None,
    timeout: float = 60,
    runs: int = 1,
    flags: list[str] | None = None,
    compat: str | None = None,
    memory: str = "128m",
    resident: bool = False,
) -> RunOutput:
    """The same job through a warm environment (engines/PROTOCOL.md), driven with `docker
    run … serve` and written here from the protocol text, independently of the worker's
    implementation. With `runs` > 1 the job runs that many times in the one environment, each
    must end the same way and leave it clean, and the last run's output is returned.

    `resident`: bound in resident mode, where the run's process stays for the next run: a run
    is over at its `end` frame (or the `exited` marker of a process that died), and its
    `returncode` is the one-shot harness's exit status for that end (0 completed, 1 failed)
    unless the process really exited."""
    if raw_job is not None:
        try:
            parsed = json.loads(raw_job)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("source"), str):
            source = parsed.pop("source")
            raw_job = json.dumps(parsed).encode()
    else:
        raw_job = json.dumps(_job(params, body, headers, limits, compat)).encode()
    started = time.monotonic()
    proc = subprocess.Popen(
        ["docker", "run", "-i", "--rm", *(flags or sandbox_flags(memory)), image, "serve"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
    )
    reader = _StreamReader(proc.stdout, started + timeout)
    try:
        bind: dict[str, Any] = {"t": "bind", "nonce": "bind-nonce", "source": source or ""}
        if resident:
            bind.update(resident=True, rss_max=_size(memory) * 6 // 10)
        proc.stdin.write(_frame(json.dumps(bind).encode()))
        assert reader.marker() == {"t": "ready", "nonce": "bind-nonce"}
        endings = []
        for index in range(runs):
            nonce = f"run-{index}"
            started = time.monotonic()
            proc.stdin.write(_frame(raw_job) + _frame(json.dumps(
                {"t": "seal", "nonce": nonce, "timeout_ms": int(timeout * 1000)}).encode()))
            frames, exited = reader.until_marker(stop_at_end=resident)
            elapsed = time.monotonic() - started
            if exited is None:  # resident: the process ended its run and lives on
                end = parse_frames(frames)[-1]
                exited = {"t": "exited", "nonce": nonce,
                          "exit_code": 0 if end.get("status") == "completed" else 1}
            assert exited["t"] == "exited" and exited["nonce"] == nonce, exited
            proc.stdin.write(_frame(b'{"t": "finish", "ended": true}'))
            done = reader.marker()
            if done["t"] == "exited" and resident:  # it ended after its end frame: its status
                exited, done = done, reader.marker()
            elif resident and done.get("exit_code") is not None:  # … noticed at the finish
                exited = {**exited, "exit_code": done["exit_code"]}
            assert done["t"] == "done" and done["nonce"] == nonce and done["clean"], done
            endings.append((exited["exit_code"], parse_frames(frames)[-1:]))
        assert all(ending == endings[0] for ending in endings), endings
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return RunOutput(
        frames=parse_frames(frames),
        returncode=exited["exit_code"],
        stderr=proc.stderr.read().decode("utf-8", "replace"),
        elapsed=elapsed,
        raw=frames,
    )


class _StreamReader:
    """Run frames (kept raw) and supervisor markers (high bit in the length) from stdout."""

    def __init__(self, stream, deadline: float) -> None:  # noqa: ANN001
        self.stream = stream
        self.deadline = deadline
        self.buffer = b""

    def _fill(self, size: int) -> None:
        import select

        while len(self.buffer) < size:
            left = self.deadline - time.monotonic()
            assert left > 0, "the warm environment did not answer in time"
            if select.select([self.stream], [], [], left)[0]:
                chunk = self.stream.read(65536)
                assert chunk, f"stdout closed; so far {self.buffer!r}"
                self.buffer += chunk

    def until_marker(self, stop_at_end: bool = False) -> tuple[bytes, dict[str, Any] | None]:
        """The run frames up to the next marker; with `stop_at_end`, up to and with an `end`
        frame too (then no marker: None)."""
        frames = b""
        while True:
            self._fill(4)
            header = int.from_bytes(self.buffer[:4], "big")
            size = header & ~MARKER_BIT
            self._fill(4 + size)
            chunk, self.buffer = self.buffer[: 4 + size], self.buffer[4 + size :]
            if header & MARKER_BIT:
                return frames, json.loads(chunk[4:])
            frames += chunk
            if stop_at_end:
                try:
                    if json.loads(chunk[4:]).get("t") == "end":
                        return frames, None
                except (ValueError, AttributeError):
                    pass

    def marker(self) -> dict[str, Any]:
        frames, marker = self.until_marker()
        assert frames == b"", f"frames outside a run: {frames!r}"
        assert marker is not None
        return marker


def _size(memory: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    return int(memory[:-1]) * units[memory[-1].lower()] if memory[-1].isalpha() else int(memory)


def engine_runner(mode: str) -> Runner:
    """The runner of an engine mode (ENGINE_MODES)."""
    if mode == "warm":
        return run_engine_warm
    if mode == "resident":
        return functools.partial(run_engine_warm, resident=True)
    return run_engine


ENGINE_MODES = ["one-shot", "warm", "resident"]


@pytest.fixture(params=ENGINE_MODES)
def run(request: pytest.FixtureRequest, python_image: str) -> Runner:
    """Every Python engine test runs in a one-shot container, in a warm environment and in a
    resident one."""
    runner = engine_runner(request.param)

    def _run(source: str | None = None, **kwargs: Any) -> RunOutput:
        return runner(python_image, source, **kwargs)

    return _run



# ----------------------------------------------------------------------------- resident


@dataclass
class Served:
    """One run of a resident environment: its frames and the supervisor's `done`."""

    out: RunOutput
    done: dict[str, Any]
    exited: dict[str, Any] | None

    @property
    def kept(self) -> bool:
        return self.done.get("kept") is True


class Environment:
    """A bound resident environment (the engine tests of resident mode, all languages that
    drive `serve` themselves); `run` plays one run as the worker does: the job and its
    seal, the frames up to `end` (or the `exited` marker, or the run's timeout, after which
    the worker gives up on the run), then `finish` and the `done` marker."""

    def __init__(self, proc: subprocess.Popen, reader: _StreamReader) -> None:
        self.proc = proc
        self.reader = reader
        self.count = 0

    def run(
        self,
        params: dict[str, str] | None = None,
        *,
        limits: dict[str, Any] | None = None,
        timeout: float = 30,
        finish: bool = True,
        ended: bool | None = None,
    ) -> Served:
        """`ended`: what `finish` says (by default, as the worker: whether the run's end
        frame came, before any `exited`)."""
        nonce = f"run-{self.count}"
        self.count += 1
        job = {"params": params or {}, "body": "", "headers": {},
               "limits": limits if limits is not None else {"log_content_max": 8000}}
        seal = {"t": "seal", "nonce": nonce, "timeout_ms": int(timeout * 1000)}
        started = time.monotonic()
        self.proc.stdin.write(_frame(json.dumps(job).encode()) + _frame(json.dumps(seal).encode()))
        frames, exited = b"", None
        if finish:
            self.reader.deadline = started + timeout
            try:
                frames, exited = self.reader.until_marker(stop_at_end=True)
            except AssertionError:  # the run's timeout: the worker sends `finish` early
                pass
            self.reader.deadline = time.monotonic() + 60
        else:  # no `finish` until the supervisor's own deadline ended the run
            self.reader.deadline = time.monotonic() + 60
            frames, exited = self.reader.until_marker()
        elapsed = time.monotonic() - started
        if ended is None:
            ended = exited is None and any(f["t"] == "end" for f in parse_frames(frames))
        self.proc.stdin.write(_frame(json.dumps({"t": "finish", "ended": ended}).encode()))
        done = self.reader.marker()
        if done["t"] == "exited":  # the process ended after its end frame
            exited, done = done, self.reader.marker()
        assert done["t"] == "done" and done["nonce"] == nonce and done["clean"], done
        if exited is not None:
            assert exited["t"] == "exited" and exited["nonce"] == nonce, exited
        code = exited["exit_code"] if exited else 0
        out = RunOutput(frames=parse_frames(frames), returncode=code, stderr="", elapsed=elapsed,
                        raw=frames)
        return Served(out, done, exited)


@contextmanager
def resident(image: str, source: str, *, memory: str = "128m",
             rss_max: int | None = None) -> Iterator[Environment]:
    proc = subprocess.Popen(
        ["docker", "run", "-i", "--rm", *sandbox_flags(memory), image, "serve"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
    )
    reader = _StreamReader(proc.stdout, time.monotonic() + 60)
    try:
        limit = _size(memory) * 6 // 10 if rss_max is None else rss_max
        bind = {"t": "bind", "nonce": "bind-nonce", "source": source, "resident": True,
                "rss_max": limit}
        proc.stdin.write(_frame(json.dumps(bind).encode()))
        assert reader.marker() == {"t": "ready", "nonce": "bind-nonce"}
        yield Environment(proc, reader)
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
