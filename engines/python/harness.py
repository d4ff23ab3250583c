"""Code Actions Python engine harness.

Runs inside the engine container (see engines/PROTOCOL.md). Reads one job (JSON) on stdin,
runs the user's ``Run(engine)`` once and writes length-prefixed JSON frames on the original
stdout, which it first moves to a private file descriptor: whatever the user code prints goes
to a capture pipe and comes back only inside one ``stdout`` frame.

It knows nothing of the platform and needs no network, environment or mounted file. Everything a
run needs is imported at start-up, before the job is read, so a container started ahead of
demand (warm pool) spends nothing on imports once the job arrives; what only the error path
needs is imported there.

A job with ``"compat": "legacy"`` gets the old engine's leniency (engines/PROTOCOL.md, "Legacy
mode"); each leniency that applies is told to the code's owner in a ``debug`` log.
"""

import io
import json
import os
import sys
import threading
import types

LOG_CONTENT_MAX = 8000
STDOUT_MAX = 64 * 1024
TRACEBACK_MAX = 16 * 1024
CONTENT_TYPES = ("text", "json", "html")
#: Legacy mode: MIME names of the three kinds (a `+json` suffix is json too).
MIME_KINDS = {
    "application/json": "json",
    "text/json": "json",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/plain": "text",
}
ACTION_MODULE = "action"
ACTION_FILENAME = "<action>"

_frame_fd = 1
_frame_lock = threading.Lock()
_finished = False
#: The run being served (resident mode serves many in one process): a log call of another
#: run's engine (a thread it left behind) writes nothing.
_serial = 0


# ----------------------------------------------------------------------------- frames


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _encode(frame):
    """One frame: 4-byte big-endian length, then the UTF-8 JSON."""
    data = json.dumps(frame, ensure_ascii=False).encode("utf-8", "replace")
    return len(data).to_bytes(4, "big") + data


def send(frame, serial=None):
    data = _encode(frame)
    with _frame_lock:
        if _finished or (serial is not None and serial != _serial):
            return
        _write_all(_frame_fd, data)


# ----------------------------------------------------------------------------- engine API


class Params:
    """Query parameters: ``.get(key)`` gives the value or ``None``."""

    __slots__ = ("_data",)

    def __init__(self, data):
        self._data = data

    def get(self, key, default=None):
        return self._data.get(key, default)

    def items(self):
        return self._data.items()

    def keys(self):
        return self._data.keys()

    def values(self):
        return self._data.values()

    def __getitem__(self, key):
        return self._data[key]

    def __contains__(self, key):
        return key in self._data

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def __repr__(self):
        return f"Params({self._data!r})"


class Header:
    """Request headers: ``.get(name)`` gives the first value or ``""``; names match without
    regard to case, as in HTTP. ``.items()`` gives name -> list of values, as received."""

    __slots__ = ("_data", "_folded")

    def __init__(self, data):
        self._data = data
        folded = {}
        for name, values in data.items():
            folded.setdefault(name.lower(), values)
        self._folded = folded

    def _values(self, name):
        values = self._data.get(name)
        if values is None and isinstance(name, str):
            values = self._folded.get(name.lower())
        return values

    def get(self, name, default=""):
        values = self._values(name)
        return values[0] if values else default

    def get_all(self, name):
        return list(self._values(name) or ())

    def items(self):
        return self._data.items()

    def keys(self):
        return self._data.keys()

    def values(self):
        return self._data.values()

    def __getitem__(self, name):
        values = self._values(name)
        if not values:
            raise KeyError(name)
        return values[0]

    def __contains__(self, name):
        return bool(self._values(name))

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def __repr__(self):
        return f"Header({self._data!r})"


class Log:
    """``engine.log``: each call is one log of that level, in call order."""

    __slots__ = ("_max_chars", "_noted", "_serial")

    def __init__(self, max_chars):
        self._max_chars = max_chars
        self._noted = set()
        self._serial = _serial

    def note(self, message):
        """A leniency the engine applied: one ``debug`` log per distinct message and run."""
        if message not in self._noted:
            self._noted.add(message)
            self._emit("debug", message)

    def _emit(self, level, content):
        text = content if type(content) is str else str(content)
        send({"t": "log", "level": level, "content": text[: self._max_chars]}, self._serial)

    def debug(self, content=""):
        self._emit("debug", content)

    def info(self, content=""):
        self._emit("info", content)

    def error(self, content=""):
        self._emit("error", content)


class Result:
    """``engine.result.set(value, status_code=200, content_type="text")``; the last call wins.

    In legacy mode an unknown content type answers text and a status outside 200-599 answers
    200 instead of raising; a status given as a digit string works in every mode. Each of
    these is told once per run in a ``debug`` log (``note``)."""

    __slots__ = ("_value", "_status_code", "_content_type", "_legacy", "_note")

    def __init__(self, legacy=False, note=None):
        self._value = ""
        self._status_code = 200
        self._content_type = "text"
        self._legacy = legacy
        self._note = note or (lambda message: None)

    @property
    def value(self):
        return self._value

    @property
    def status_code(self):
        return self._status_code

    @property
    def content_type(self):
        return self._content_type

    def _kind(self, content_type):
        kind = content_type.strip().lower() if isinstance(content_type, str) else None
        if kind in CONTENT_TYPES:
            return kind
        if not self._legacy:
            raise ValueError(
                f"content_type must be one of {', '.join(CONTENT_TYPES)}; got {content_type!r}"
            )
        media = kind.split(";", 1)[0].strip() if kind else ""
        mapped = MIME_KINDS.get(media) or ("json" if media.endswith("+json") else None)
        if mapped:
            self._note(f"result.set: content_type {content_type!r} taken as {mapped!r} "
                       f"(legacy mode; the engine's names are text, json and html)")
            return mapped
        self._note(f"result.set: content_type {content_type!r} is not text, json or html: "
                   f"answered as text/plain (legacy mode)")
        return "text"

    def _code(self, status_code):
        code = status_code
        if isinstance(code, str) and code.strip().isdigit():
            code = int(code.strip())
            if 200 <= code <= 599:
                self._note(f"result.set: status_code {status_code!r} (a string) taken as {code}")
        if not isinstance(code, bool) and isinstance(code, int) and 200 <= code <= 599:
            return code
        if not self._legacy:
            raise ValueError(f"status_code must be an HTTP status (200-599); got {status_code!r}")
        self._note(f"result.set: status_code {status_code!r} is not an HTTP status (200-599): "
                   f"answered 200 (legacy mode)")
        return 200

    def set(self, value="", status_code=200, content_type="text"):
        kind = self._kind(content_type)
        code = self._code(status_code)
        if isinstance(value, str):
            text = str(value)
        else:
            try:
                text = json.dumps(value)
            except Exception:
                text = str(value)
        self._value = text
        self._status_code = int(code)
        self._content_type = kind

    def __repr__(self):
        return (
            f"Result({self.value!r}, status_code={self.status_code}, "
            f"content_type={self.content_type!r})"
        )


class Request:
    """``engine.request``: the same params, body, header and log, grouped."""

    __slots__ = ("params", "body", "header", "log")

    def __init__(self, params, body, header, log):
        self.params = params
        self.body = body
        self.header = header
        self.log = log


class Engine:
    """What ``Run(engine)`` receives."""

    __slots__ = ("params", "body", "header", "request", "log", "result")

    def __init__(self, params, body, header, log, result):
        self.params = params
        self.body = body
        self.header = header
        self.log = log
        self.result = result
        self.request = Request(params, body, header, log)


# ----------------------------------------------------------------------------- job


def _params(raw):
    out = {}
    if isinstance(raw, dict):
        for key, value in raw.items():
            if isinstance(value, list):
                value = value[0] if value else ""
            out[str(key)] = value if isinstance(value, str) else str(value)
    return out


def _headers(raw):
    out = {}
    if isinstance(raw, dict):
        for name, values in raw.items():
            if not isinstance(values, list):
                values = [values]
            out[str(name)] = [v if isinstance(v, str) else str(v) for v in values]
    return out


def _limit(limits, key, default):
    value = limits.get(key) if isinstance(limits, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return default


# ----------------------------------------------------------------------------- capture


class Capture:
    """fd 1 and fd 2 pointed at a pipe; a thread drains it, keeping the first ``cap`` bytes."""

    def __init__(self, cap):
        self.cap = cap
        self.chunks = []
        self.size = 0
        self.total = 0
        self.truncated = False
        self.lock = threading.Lock()
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self.read_fd = read_fd
        self.thread = threading.Thread(target=self._drain, name="stdout-capture", daemon=True)
        self.thread.start()

    def _drain(self):
        try:
            self._read_until_closed()
        finally:
            # Closed here, once no writer is left: a resident process runs many runs, and
            # closing it from `finish` while a leftover writer keeps this read blocked would
            # let the next run's pipe take its number under this thread.
            try:
                os.close(self.read_fd)
            except OSError:  # the code closed it already (os.closerange)
                pass

    def _read_until_closed(self):
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            with self.lock:
                self.total += len(chunk)
                room = self.cap - self.size
                if room > 0:
                    kept = chunk[:room]
                    self.chunks.append(kept)
                    self.size += len(kept)
                if len(chunk) > max(room, 0):
                    self.truncated = True

    def finish(self, wait=0.5):
        """Close our write ends and return what was captured (decoded)."""
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                if stream is not None:
                    stream.flush()
            except Exception:
                pass
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
        # Children of the user code may still hold the pipe open: do not wait for them.
        self.thread.join(wait)
        with self.lock:
            data = b"".join(self.chunks)
            truncated = self.truncated
        if truncated:
            import codecs

            # Drop a multi-byte character cut in half by the cap instead of "replacing" it.
            return codecs.getincrementaldecoder("utf-8")("replace").decode(data, final=False)
        return data.decode("utf-8", "replace")


def _redirect_std_streams():
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        stream = io.TextIOWrapper(
            io.FileIO(fd, "w", closefd=False),
            encoding="utf-8",
            errors="backslashreplace",
            line_buffering=True,
        )
        setattr(sys, name, stream)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")


# ----------------------------------------------------------------------------- running


def _failure_message(exc):
    if isinstance(exc, SystemExit):
        code = exc.code
        return "SystemExit: exit() called" + ("" if code is None else f" with status {code!r}")
    if isinstance(exc, KeyboardInterrupt):
        return "KeyboardInterrupt"
    try:
        message = str(exc)
    except Exception:
        message = ""
    return message if message else type(exc).__name__


def _print_traceback(exc, source):
    """Write the user-facing traceback to the captured stderr (it lands in the stdout frame)."""
    try:
        import linecache
        import traceback

        lines = source.splitlines(True)
        linecache.cache[ACTION_FILENAME] = (len(source), None, lines, ACTION_FILENAME)
        tb = exc.__traceback__
        # Hide the harness's own frames: start at the first frame of the user's code.
        while tb is not None and tb.tb_frame.f_code.co_filename != ACTION_FILENAME:
            tb = tb.tb_next
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        if len(text) > TRACEBACK_MAX:
            # An oversized exception message is the code's failure, not printed output: cut it
            # so that the run fails with its exception instead of the output limit.
            cut = len(text) - TRACEBACK_MAX
            text = (f"{text[:TRACEBACK_MAX]}\n… the traceback was cut: {cut} more characters "
                    f"(an oversized exception message)\n")
        sys.stderr.write(text)
        sys.stderr.flush()
    except Exception:
        pass


def _load_action(source, legacy, log):
    """Execute the source as the module `action`; its `Run`, or None in legacy mode when it
    has none (the source ran as a script)."""
    module = types.ModuleType(ACTION_MODULE)
    module.__file__ = ACTION_FILENAME
    sys.modules[ACTION_MODULE] = module
    code = compile(source, ACTION_FILENAME, "exec", dont_inherit=True)
    exec(code, module.__dict__)
    run = module.__dict__.get("Run")
    if run is None:
        if not legacy:
            raise NameError("Run(engine) is not defined")
        log.note("no Run(engine) in the source: it ran as a script and the caller gets an "
                 "empty 200 (legacy mode)")
    return run


def _call_action(run, engine):
    if not callable(run):
        raise TypeError("Run must be a function taking the engine: def Run(engine): ...")
    outcome = run(engine)
    if type(outcome).__name__ == "coroutine" and hasattr(outcome, "__await__"):
        import asyncio

        asyncio.run(outcome)


def _clean_exit(exc):
    return isinstance(exc, SystemExit) and exc.code in (None, 0)


def main():
    if sys.argv[1:] == ["serve"]:
        # A warm environment (engines/PROTOCOL.md): this process supervises, and every run
        # is a fresh child forked from it.
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import supervisor

        del sys.path[0]
        supervisor.serve()
        return
    run_job(sys.stdin.buffer.read())


def _open_frame_channel():
    """The frame channel moves to a private descriptor before any user code can run."""
    global _frame_fd
    _frame_fd = os.dup(1)
    os.set_inheritable(_frame_fd, False)


def _parse_job(raw, source):
    job = json.loads(raw.decode("utf-8"))
    if isinstance(job, dict) and source is not None:
        job["source"] = source
    if not isinstance(job, dict) or not isinstance(job.get("source"), str):
        raise ValueError("job must be an object with a string 'source'")
    return job


def run_job(raw, source=None):
    """Run one job (bytes of JSON) and exit the process. `source`: the code a warm
    environment is bound to, when the job does not carry it."""
    _open_frame_channel()
    try:
        job = _parse_job(raw, source)
    except Exception as exc:
        send({"t": "end", "status": "failed", "error": f"invalid job: {exc}"})
        os._exit(2)
    error = _run(job)
    # Skip interpreter teardown: no waiting on threads or atexit hooks the user code left.
    os._exit(0 if error is None else 1)


class Resident:
    """Resident mode (engines/PROTOCOL.md): one process serves the runs of one code, one at a
    time. The code's module is executed by the first run and kept, as Lambda keeps its
    process: what the module holds is there for the next run. A module that failed to load
    is loaded again by the next run; a legacy script without `Run` runs again every time."""

    def __init__(self, source):
        self.source = source
        self.module = None
        _open_frame_channel()

    def serve(self, raw, ending):
        """One run: its frames, `end` last; returns once the end frame is written. `ending`
        is called just before the end frame goes out (the supervisor knows the run ended by
        the time the worker does)."""
        try:
            job = _parse_job(raw, self.source)
        except Exception as exc:  # not the code's doing: ends the process as in every mode
            _begin_run()
            send({"t": "end", "status": "failed", "error": f"invalid job: {exc}"})
            os._exit(2)
        _run(job, self, ending)

    def action(self, source, legacy, log):
        if self.module is not None:
            return self.module.__dict__.get("Run")
        run = _load_action(source, legacy, log)
        if run is not None:
            self.module = sys.modules[ACTION_MODULE]
        return run


def _begin_run():
    global _finished, _serial
    with _frame_lock:
        _serial += 1
        _finished = False


def _end_run():
    global _finished
    with _frame_lock:
        _finished = True


def _run(job, resident=None, ending=None):
    """Run one job; its frames are written, `end` last. The run's error (None: completed)."""
    _begin_run()
    source = job["source"]
    legacy = job.get("compat") == "legacy"
    body = job.get("body")
    body = body.strip() if isinstance(body, str) else ""
    log = Log(_limit(job.get("limits"), "log_content_max", LOG_CONTENT_MAX))
    result = Result(legacy, log.note)
    params = Params(_params(job.get("params")))
    header = Header(_headers(job.get("headers")))
    engine = Engine(params, body, header, log, result)

    capture = Capture(STDOUT_MAX)
    _redirect_std_streams()
    sys.argv = [ACTION_MODULE]

    error = None
    # Legacy mode: a code that fails once Run was called still answers what it had set
    # (an empty 200 when nothing), as the old engine did; the run stays failed.
    answered = False
    running = False
    try:
        if resident is not None:
            run = resident.action(source, legacy, log)
        else:
            run = _load_action(source, legacy, log)
        running = True
        if run is not None:
            _call_action(run, engine)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt are failures too
        if legacy and _clean_exit(exc):
            log.note(f"{_failure_message(exc)}: the run ends as if the code had returned, and "
                     f"the caller gets what it set (legacy mode)")
        else:
            error = _failure_message(exc)
            answered = legacy and running
            _print_traceback(exc, source)

    frame = None
    if error is None or answered:
        try:
            # Bytes first, so that a result object tampered with by the user code cannot
            # break the frame stream half-way.
            frame = _encode(
                {
                    "t": "result",
                    "value": str(result._value),
                    "status_code": int(result._status_code),
                    "content_type": str(result._content_type),
                }
            )
        except BaseException as exc:
            frame = None
            if error is None:
                error = f"invalid result: {_failure_message(exc)}"

    try:
        if error is not None:
            message = f"Action execution failed: {error}"
            send({"t": "log", "level": "error", "content": message[: log._max_chars]})
            if frame is not None:
                log.note(f"the code failed after Run began: the caller still gets the result "
                         f"it had set (status {int(result._status_code)}, "
                         f"{result._content_type}); the run is recorded as failed (legacy mode)")
        if frame is not None:
            with _frame_lock:
                _write_all(_frame_fd, frame)
        printed = capture.finish()
        if printed or capture.total:
            # `total` counts every byte printed, kept or not: the worker enforces its cap.
            send({"t": "stdout", "data": printed, "total": capture.total})
        end = {"t": "end", "status": "completed" if error is None else "failed"}
        if error is not None:
            end["error"] = error[:STDOUT_MAX]
        if ending is not None:
            ending()
        send(end)
        _end_run()
    except BaseException:
        os._exit(3)
    return error


if __name__ == "__main__":
    main()
