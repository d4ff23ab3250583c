"""Compile Go actions, once per source, in a hardened container of the Go engine image.

``GoBuilder`` is the ``CodePreparer`` of Go: ``job_fields(source, compat)`` gives
``{"artifact": <base64 of a static linux binary>}``, which the engine's launcher runs (see
engines/go/README.md); for a legacy code whose source is a whole program (its own
``func main``, as the old service ran Go codes) also ``"program": true``. The binary depends
only on the source, the engine image and, for legacy codes, the compat mode, so it is cached
under ``sha256(image tag + source)`` (``+ "legacy"`` for those): in memory (a small LRU) and
on local disk (``<cache_dir>/<key>.bin``, ``<key>.prog`` for a program, or ``<key>.err``
holding the compiler's message, so that code that does not compile is not compiled again
either). Disk writes are atomic (temp file +
rename), so worker processes sharing the folder never see half a file.

The compile container gets the same treatment as a run, with room for the compiler:
read-only root, uid 65534, every capability dropped, no-new-privileges, no network, a pids,
memory and file-size limit, a noexec tmpfs ``/tmp`` and a timeout. Its protocol follows
engines/PROTOCOL.md: ``{"source": "..."}`` on stdin, then EOF; frames on stdout:

- ``{"t": "artifact", "data": "<base64>", "size": n, "go_version": "...", "elapsed_ms": n}``
  (``"program": true`` for a legacy program) then ``{"t": "end", "status": "completed"}``, or
- ``{"t": "end", "status": "failed", "error": "main.go:3:5: undefined: x",
  "reason": "compile" | "internal"}``: only ``compile`` errors depend on the source alone
  and are cached.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.codes.model import STRICT
from shared.settings import Settings
from worker.preparers.preparer import PreparationError
from worker.sandbox.hardening import ContainerPolicy, create_hardened, remove_quietly
from worker.sandbox.sandbox import parse_size
from worker.wire.attach_stream import (
    STDERR,
    AttachedContainer,
    StreamTimeout,
    StreamTooLarge,
    final_state,
)
from worker.wire.frames import FrameDecoder, FrameError

log = logging.getLogger(__name__)

LANGUAGE = "go"
#: A source that uses cgo, which compiles disable (CGO_ENABLED=0).
CGO_IMPORT = re.compile(r'^\s*(import\s*(\(\s*)?)?(\w+\s+)?"C"\s*$', re.MULTILINE)
#: Disk cache entries: a compiled action, a compiled legacy program, a compile error.
_DISK_KINDS = ((".bin", "ok"), (".prog", "program"), (".err", "err"))
_DISK_SUFFIXES = tuple(suffix for suffix, _ in _DISK_KINDS)
_SUFFIX_OF = {kind: suffix for suffix, kind in _DISK_KINDS}
COMPILE_COMMAND = ["compile"]
STDERR_KEEP = 4096
ELF_MAGIC = b"\x7fELF"


@dataclass(frozen=True)
class CompileLimits:
    timeout: float = 60.0
    memory: str = "512m"  # a compile peaks near 60 MiB: std is pre-built
    tmpfs_size: str = "256m"
    pids: int = 256
    #: What a run can take: the launcher holds the job (base64) and the binary in memory.
    max_artifact_bytes: int = 16 * 1024 * 1024
    nano_cpus: int | None = None


class _CompileFailure(Exception):
    def __init__(self, message: str, cacheable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.cacheable = cacheable


class GoBuilder:
    """``CodePreparer`` for Go: compile once per (engine image, source), cache the result."""

    def __init__(
        self,
        docker_client: Any,
        settings: Settings,
        cache_dir: Path,
        *,
        image: str | None = None,
        limits: CompileLimits | None = None,
        labels: dict[str, str] | None = None,
        memory_cache_bytes: int = 32 * 1024 * 1024,
        disk_cache_max_bytes: int = 2 * 1024 * 1024 * 1024,
    ) -> None:
        self.client = docker_client
        self.settings = settings
        self.cache_dir = Path(cache_dir)
        self.limits = limits or CompileLimits()
        self.labels = dict(labels or {})
        self.memory_cache_bytes = memory_cache_bytes
        self.disk_cache_max_bytes = disk_cache_max_bytes
        self._image = image
        self._lru: OrderedDict[str, tuple[str, str]] = OrderedDict()  # key -> (kind, text)
        self._lru_bytes = 0
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._writes = 0
        #: Compile containers this builder started (tests and metrics read it).
        self.compiles = 0

    # ------------------------------------------------------------------ public

    @property
    def image(self) -> str:
        if self._image is None:
            from worker.images import engine_image_tag

            self._image = engine_image_tag(LANGUAGE)
        return self._image

    def cache_key(self, source: str, compat: str = STRICT) -> str:
        mode = "" if compat == STRICT else f"{compat}\0"
        return hashlib.sha256(f"{self.image}\0{mode}{source}".encode()).hexdigest()

    def job_fields(self, source: str, compat: str = STRICT) -> dict[str, Any]:
        """``{"artifact": base64}`` (with ``"program": true`` for a legacy program);
        ``PreparationError`` when the source does not compile."""
        key = self.cache_key(source, compat)
        hit = self._lru_get(key)
        if hit is None:
            lock = self._key_lock(key)
            try:
                with lock:  # one compile per source at a time in this process
                    hit = self._lru_get(key) or self._disk_get(key)
                    if hit is None:
                        hit = self._build(key, source, compat)
                    self._lru_put(key, hit)
            finally:
                with self._lock:
                    if self._key_locks.get(key) is lock and not lock.locked():
                        del self._key_locks[key]
        kind, text = hit
        if kind == "err":
            raise PreparationError(text)
        if kind == "program":
            return {"artifact": text, "program": True}
        return {"artifact": text}

    # ------------------------------------------------------------------ caches

    def _key_lock(self, key: str) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def _lru_get(self, key: str) -> tuple[str, str] | None:
        with self._lock:
            hit = self._lru.get(key)
            if hit is not None:
                self._lru.move_to_end(key)
            return hit

    def _lru_put(self, key: str, value: tuple[str, str]) -> None:
        size = len(value[1])
        with self._lock:
            if key in self._lru or size > self.memory_cache_bytes:
                return
            self._lru[key] = value
            self._lru_bytes += size
            while self._lru_bytes > self.memory_cache_bytes and self._lru:
                _, (_, old) = self._lru.popitem(last=False)
                self._lru_bytes -= len(old)

    def _path(self, key: str, suffix: str) -> Path:
        return self.cache_dir / f"{key}{suffix}"

    def _disk_get(self, key: str) -> tuple[str, str] | None:
        for suffix, kind in _DISK_KINDS:
            path = self._path(key, suffix)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("go build cache: cannot read %s: %s", path, exc)
                continue
            if kind != "err" and not data.startswith(ELF_MAGIC):
                log.warning("go build cache: %s is not an executable; rebuilding", path)
                continue
            try:
                os.utime(path)  # the disk cache evicts the least recently used first
            except OSError:
                pass
            if kind != "err":
                return kind, base64.b64encode(data).decode("ascii")
            return "err", data.decode("utf-8", "replace")
        return None

    def _disk_put(self, key: str, suffix: str, data: bytes) -> None:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}-", suffix=".tmp", dir=self.cache_dir)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self._path(key, suffix))
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:  # a cache that cannot be written only costs compiles
            log.warning("go build cache: cannot write %s: %s", self._path(key, suffix), exc)
            return
        self._writes += 1
        if self._writes % 16 == 1:
            self._prune_disk()

    def _prune_disk(self) -> None:
        """Remove the least recently used entries past ``disk_cache_max_bytes``."""
        entries = []
        total = 0
        try:
            with os.scandir(self.cache_dir) as it:
                for entry in it:
                    if entry.name.endswith(_DISK_SUFFIXES) and entry.is_file():
                        st = entry.stat()
                        entries.append((st.st_mtime, st.st_size, entry.path))
                        total += st.st_size
        except OSError:
            return
        if total <= self.disk_cache_max_bytes:
            return
        for _, size, path in sorted(entries):
            if total <= self.disk_cache_max_bytes * 0.9:
                break
            try:
                os.unlink(path)
                total -= size
            except OSError:
                pass

    # ------------------------------------------------------------------ compiling

    def _build(self, key: str, source: str, compat: str) -> tuple[str, str]:
        started = time.monotonic()
        try:
            binary, program = self._compile(source, compat)
        except _CompileFailure as failure:
            log.info("go compile %s failed in %.2f s", key[:12], time.monotonic() - started)
            if failure.cacheable and CGO_IMPORT.search(source):
                # With cgo off, the go tool skips every file that imports "C": the compiler
                # then reports something beside the point ("undefined: Run").
                failure = _CompileFailure(
                    f"cgo is not supported (the source imports \"C\"): {failure.message}",
                    cacheable=True,
                )
            if failure.cacheable:
                self._disk_put(key, ".err", failure.message.encode("utf-8"))
                return "err", failure.message
            raise PreparationError(failure.message) from None
        log.info(
            "go compile %s: %d bytes in %.2f s", key[:12], len(binary), time.monotonic() - started
        )
        kind = "program" if program else "ok"
        self._disk_put(key, _SUFFIX_OF[kind], binary)
        return kind, base64.b64encode(binary).decode("ascii")

    def _policy(self) -> ContainerPolicy:
        limits = self.limits
        return ContainerPolicy(
            memory_bytes=parse_size(limits.memory),
            pids=limits.pids,
            tmpfs_options=f"rw,nosuid,nodev,noexec,size={limits.tmpfs_size},mode=1777",
            fsize_bytes=parse_size(limits.tmpfs_size),
            nofile=1024,
        )

    def _compile(self, source: str, compat: str) -> tuple[bytes, bool]:
        policy = self._policy()
        extra = {"nano_cpus": self.limits.nano_cpus} if self.limits.nano_cpus else {}
        container_id = create_hardened(
            self.client.api,
            self.image,
            command=COMPILE_COMMAND,
            hostname="build",
            labels={"codeactions.compile": LANGUAGE, **self.labels},
            host_config=policy.host_config(self.client.api, **extra),
            entrypoint=policy.entrypoint(self.client.api, self.image),
        )
        self.compiles += 1
        try:
            return self._exchange(container_id, source, compat)
        finally:
            remove_quietly(self.client.api, container_id)

    def _exchange(self, container_id: str, source: str, compat: str) -> tuple[bytes, bool]:
        attached = AttachedContainer(self.client.api, container_id)
        frames: list[dict[str, Any]] = []
        stderr_tail = bytearray()
        timed_out = False
        try:
            self.client.api.start(container_id)
            attached.send_job(json.dumps({"source": source, "compat": compat}).encode())
            timed_out = self._pump(attached, frames, stderr_tail)
        finally:
            attached.hang_up()  # before kill: see AttachedContainer.hang_up
        if timed_out:
            try:
                self.client.api.kill(container_id)
            except Exception:
                pass
            raise _CompileFailure(
                f"compilation timed out after {self.limits.timeout:g} s", cacheable=False
            )
        return self._outcome(container_id, frames, bytes(stderr_tail))

    def _pump(
        self, attached: AttachedContainer, frames: list[dict[str, Any]], stderr_tail: bytearray
    ) -> bool:
        """Read the compile container's output until EOF; True when the timeout hit first."""
        max_output = 4 * self.limits.max_artifact_bytes + 1024 * 1024
        decoder = FrameDecoder(max_frame_bytes=max_output)
        deadline = time.monotonic() + self.limits.timeout
        try:
            for stream, payload in attached.output(deadline, max_output + 64 * 1024):
                if stream == STDERR:
                    stderr_tail += payload[: max(0, STDERR_KEEP - len(stderr_tail))]
                    continue
                try:
                    frames.extend(decoder.feed(payload))
                except FrameError as exc:
                    raise _CompileFailure(
                        f"the compiler's output was malformed: {exc}", cacheable=False
                    ) from None
        except StreamTimeout:
            return True
        except StreamTooLarge:
            raise _CompileFailure("the compiler's output is too large", cacheable=False) from None
        return False

    def _outcome(
        self, container_id: str, frames: list[dict[str, Any]], stderr_tail: bytes
    ) -> tuple[bytes, bool]:
        """The binary, and whether it is a whole program (legacy mode)."""
        end = next((f for f in frames if f.get("t") == "end"), None)
        artifact = next((f for f in frames if f.get("t") == "artifact"), None)
        if end is None or (end.get("status") == "completed" and artifact is None):
            state = final_state(self.client.api, container_id)
            if state.get("OOMKilled"):
                raise _CompileFailure(
                    f"compilation ran out of memory ({self.limits.memory})", cacheable=False
                )
            detail = stderr_tail.decode("utf-8", "replace").strip()[-500:]
            message = f"the Go compiler stopped unexpectedly (exit code {state.get('ExitCode')})"
            raise _CompileFailure(message + (f": {detail}" if detail else ""), cacheable=False)
        if end.get("status") != "completed":
            message = str(end.get("error") or "compilation failed")
            crashed = end.get("reason") != "compile"
            if crashed and final_state(self.client.api, container_id).get("OOMKilled"):
                message = f"compilation ran out of memory ({self.limits.memory})"
            raise _CompileFailure(message, cacheable=end.get("reason") == "compile")
        assert artifact is not None  # a completed end without one failed above
        try:
            binary = base64.b64decode(str(artifact.get("data", "")), validate=True)
        except ValueError:
            raise _CompileFailure("the compiled action was malformed", cacheable=False) from None
        if not binary.startswith(ELF_MAGIC):
            raise _CompileFailure("the compiled action is not an executable", cacheable=False)
        if len(binary) > self.limits.max_artifact_bytes:
            raise _CompileFailure(
                f"the compiled action is {_mib(len(binary))}; at most "
                f"{_mib(self.limits.max_artifact_bytes)} can run",
                cacheable=True,
            )
        return binary, artifact.get("program") is True


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"
