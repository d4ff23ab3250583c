"""Engine tests: build the images for real, then run the harness in a hardened container the
way the worker does (job on stdin, frames on stdout)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

SANDBOX_FLAGS = [
    "--read-only",
    "--tmpfs",
    "/tmp:size=16m",
    "--user",
    "65534:65534",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--network",
    "none",
    "--memory",
    "128m",
    "--pids-limit",
    "64",
]


class FrameError(ValueError):
    """The engine's stdout is not a clean sequence of frames."""


def parse_frames(data: bytes) -> list[dict[str, Any]]:
    """4-byte big-endian length + UTF-8 JSON, repeated; nothing else allowed on stdout."""
    frames: list[dict[str, Any]] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 4:
            raise FrameError(f"truncated length prefix at byte {pos}: {data[pos:]!r}")
        size = int.from_bytes(data[pos : pos + 4], "big")
        pos += 4
        if len(data) - pos < size:
            raise FrameError(f"frame of {size} bytes truncated at byte {pos}")
        frame = json.loads(data[pos : pos + size].decode("utf-8"))
        if not isinstance(frame, dict) or "t" not in frame:
            raise FrameError(f"not a frame: {frame!r}")
        frames.append(frame)
        pos += size
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
) -> RunOutput:
    if raw_job is None:
        job = {
            "source": source,
            "params": params or {},
            "body": body,
            "headers": headers or {},
            "limits": limits if limits is not None else {"log_content_max": 8000},
        }
        raw_job = json.dumps(job).encode()
    started = time.monotonic()
    proc = subprocess.run(
        ["docker", "run", "-i", "--rm", *SANDBOX_FLAGS, image],
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


@pytest.fixture()
def run(python_image: str) -> Runner:
    def _run(source: str | None = None, **kwargs: Any) -> RunOutput:
        return run_engine(python_image, source, **kwargs)

    return _run
