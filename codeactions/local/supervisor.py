"""The supervisor of the local platform (`make run`, `make chaos`): keeps every part up.

A part that dies on its own — a child (`codeactions api`, a worker, beat, Flower, the
events consumer) or an embedded service (PostgreSQL, Redis, RabbitMQ, moto, a dockerd
started here) — is restarted after a delay that starts at 1 s and doubles up to 30 s, and
falls back to 1 s once the part has run for a minute. Every exit and restart is logged.
Nothing stops the platform but `stop()` (Ctrl-C or SIGTERM in `make run`).

Every process started here is reaped (its exit status collected with waitpid) as soon as
it exits, so no zombie keeps a pid that a lock file names — PostgreSQL and dockerd refuse
to start while the pid in their lock file exists, even as a zombie — and what is left of
a dead process's group (PostgreSQL's backends, a gunicorn master's workers) is killed
before the part starts again.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

log = logging.getLogger("codeactions.local.supervisor")

#: Restart delays (seconds): first, ceiling, and the uptime after which they start over.
FIRST_DELAY = 1.0
MAX_DELAY = 30.0
HEALTHY_RESET = 60.0

_POLL_SECONDS = 0.5
_REMAINS_GRACE = 5.0


@dataclass
class Backoff:
    """Restart delays: `first`, doubling to `maximum`; back to `first` after a part ran
    for `reset_after` seconds (a crash once an hour is not a crash loop)."""

    first: float = FIRST_DELAY
    maximum: float = MAX_DELAY
    reset_after: float = HEALTHY_RESET
    _next: float = field(default=0.0, init=False)

    def delay_after(self, uptime: float) -> float:
        if uptime >= self.reset_after or not self._next:
            self._next = self.first
        delay = self._next
        self._next = min(self.maximum, self._next * 2)
        return delay


class State(StrEnum):
    RUNNING = "running"
    DOWN = "down"  # exited; restarts when its delay is over (and it is not held)
    STARTING = "starting"  # a service coming back, in a thread of its own
    STOPPED = "stopped"


@dataclass(frozen=True)
class Event:
    """One thing the supervisor saw or did, for logs and for `make chaos`."""

    at: float  # time.time()
    unit: str
    what: str  # "exited", "restarted", "restart failed"
    detail: str = ""


class Unit(ABC):
    """One supervised part."""

    #: Starting may take long (a service waits until healthy): done in a thread of its own,
    #: so a dying worker is not left waiting behind a RabbitMQ start.
    slow_start: bool = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = State.STOPPED
        self.held = False
        self.restarts = 0
        self.started_at = 0.0
        self.restart_at = 0.0
        self.backoff = Backoff()
        self.thread: threading.Thread | None = None
        self.start_error: BaseException | None = None

    @property
    @abstractmethod
    def pid(self) -> int | None:
        """The main process's pid while it runs."""

    @abstractmethod
    def launch(self) -> None:
        """Start the part (first time or again); return once it is up."""

    @abstractmethod
    def exit_status(self) -> str | None:
        """None while the part runs; otherwise how it ended. Reaps the process."""

    @abstractmethod
    def clear_remains(self) -> None:
        """After the part died: its leftovers (process group, stale files)."""

    @abstractmethod
    def halt(self) -> None:
        """Stop the part for good."""


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "gone"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


class ChildUnit(Unit):
    """A `codeactions` subcommand in its own process group (see `children.spawn_child`).
    Restarted inline by the supervisor's own long-lived thread: a child dies with the
    thread that started it (PR_SET_PDEATHSIG is per thread)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str],
                 output_path: os.PathLike | None = None) -> None:
        super().__init__(name)
        self.argv = argv
        self.env = env
        self.output_path = output_path
        self.popen: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None and self.popen.returncode is None \
            else None

    def launch(self) -> None:
        from codeactions.local.children import spawn_child

        if self.output_path is None:
            self.popen = spawn_child(self.argv, self.env)
            return
        path = Path(self.output_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as output:
            self.popen = spawn_child(self.argv, self.env, output)

    def exit_status(self) -> str | None:
        if self.popen is None:
            return "never started"
        if self.popen.poll() is None:
            return None
        return describe_exit(self.popen.returncode)

    def clear_remains(self) -> None:
        """The dead child's group (gunicorn's workers outlive their master): SIGTERM, then
        SIGKILL after a short grace, so the next one can bind the same port."""
        if self.popen is not None:
            stop_process_group(self.popen.pid, _REMAINS_GRACE)

    def halt(self) -> None:
        from codeactions.local.children import stop_children

        if self.popen is not None:
            stop_children([self.popen])


def stop_process_group(pgid: int, grace: float) -> None:
    """SIGTERM the members of process group `pgid`, SIGKILL them after `grace` seconds."""
    from codeactions.local.services.processes import group_members

    if not group_members(pgid):
        return
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if group_members(pgid):
        _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


class ServiceUnit(Unit):
    """An embedded server (`codeactions.local.services.server.LocalServer`). `after_start`
    runs after each restart (moto keeps buckets in memory: the platform's comes back)."""

    slow_start = True

    def __init__(self, server, after_start: Callable[[], None] | None = None) -> None:  # noqa: ANN001
        super().__init__(server.name)
        self.server = server
        self.after_start = after_start

    @property
    def pid(self) -> int | None:
        process = self.server.process
        return process.pid if process is not None and process.is_running() else None

    def launch(self) -> None:
        self.server.start()
        if self.after_start is not None:
            self.after_start()

    def exit_status(self) -> str | None:
        if self.server.is_running():
            return None
        process = self.server.process
        popen = process.popen if process is not None else None
        return describe_exit(popen.returncode if popen is not None else None)

    def clear_remains(self) -> None:
        self.server.forget_dead_process()

    def halt(self) -> None:
        self.server.stop()


class DockerUnit(Unit):
    """A dockerd started here (`codeactions.local.services.docker_engine.DockerEngine`).
    An engine that was already running is not ours to watch."""

    slow_start = True

    def __init__(self, engine) -> None:  # noqa: ANN001
        super().__init__("dockerd")
        self.engine = engine

    @property
    def pid(self) -> int | None:
        return self.engine.process.pid if self.engine.is_running() else None

    def launch(self) -> None:
        if not self.engine.is_running():
            self.engine.start_again()

    def exit_status(self) -> str | None:
        if self.engine.is_running():
            return None
        process = self.engine.process
        popen = process.popen if process is not None else None
        return describe_exit(popen.returncode if popen is not None else None)

    def clear_remains(self) -> None:
        if self.engine.process is not None:
            self.engine.process.kill_remains()

    def halt(self) -> None:
        self.engine.stop()


class Supervisor:
    """Watches units, restarts those that die, stops them all on `stop()`.

    `run()` loops until `stop_event` is set; in the main thread of `make run`
    `wake_on_signals()` makes it react to a child's exit (SIGCHLD) or Ctrl-C at once
    rather than at the next poll. Services are listed first and stopped last.
    """

    def __init__(self, backoff: Callable[[], Backoff] = Backoff) -> None:
        self.units: list[Unit] = []
        self.events: list[Event] = []
        self._backoff = backoff
        self._lock = threading.RLock()
        self._wakeup_fd: int | None = None

    def unit(self, name: str) -> Unit:
        for unit in self.units:
            if unit.name == name:
                return unit
        raise KeyError(name)

    def watch(self, unit: Unit) -> Unit:
        """Supervise a unit that is already up."""
        unit.backoff = self._backoff()
        unit.state = State.RUNNING
        unit.started_at = time.monotonic()
        with self._lock:
            self.units.append(unit)
        return unit

    def start(self, unit: Unit) -> Unit:
        """Start a unit, then supervise it."""
        unit.launch()
        return self.watch(unit)

    def hold(self, name: str) -> None:
        """Do not restart `name` until `release(name)` (make chaos keeps a service down)."""
        self.unit(name).held = True

    def release(self, name: str) -> None:
        self.unit(name).held = False

    def record(self, unit: Unit, what: str, detail: str = "") -> None:
        self.events.append(Event(time.time(), unit.name, what, detail))

    # --- the loop -------------------------------------------------------------------

    def wake_on_signals(self) -> None:
        """Main thread only: wake the loop on SIGCHLD (a child exited) and on any other
        handled signal, through a wakeup file descriptor (a handler may run while the loop
        holds a lock; writing to a pipe from C is always safe)."""
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self._wakeup_fd = read_fd

    def run(self, stop_event: threading.Event, poll_seconds: float = _POLL_SECONDS) -> None:
        while not stop_event.is_set():
            self.tick()
            self._sleep(poll_seconds, stop_event)

    def _sleep(self, seconds: float, stop_event: threading.Event) -> None:
        if self._wakeup_fd is None:
            stop_event.wait(seconds)
            return
        readable, _, _ = select.select([self._wakeup_fd], [], [], seconds)
        if readable:
            try:
                while os.read(self._wakeup_fd, 512):
                    pass
            except BlockingIOError:
                pass

    def tick(self) -> None:
        """One look at every unit: notice exits, start what is due."""
        now = time.monotonic()
        with self._lock:
            units = list(self.units)
        for unit in units:
            if unit.state is State.RUNNING:
                self._check(unit, now)
            elif unit.state is State.DOWN and not unit.held and now >= unit.restart_at:
                self._restart(unit)
            elif unit.state is State.STARTING and unit.thread is not None \
                    and not unit.thread.is_alive():
                unit.thread = None
                self._started(unit, unit.start_error)

    def _check(self, unit: Unit, now: float) -> None:
        status = unit.exit_status()
        if status is None:
            return
        uptime = now - unit.started_at
        delay = unit.backoff.delay_after(uptime)
        unit.state = State.DOWN
        unit.restart_at = now + delay
        log.warning("%s exited (%s) after %.0f s; restarting it in %.0f s", unit.name,
                    status, uptime, delay)
        self.record(unit, "exited", status)
        try:
            unit.clear_remains()
        except Exception:
            log.exception("clearing what %s left failed", unit.name)

    def _restart(self, unit: Unit) -> None:
        unit.restarts += 1
        if not unit.slow_start:
            error: BaseException | None = None
            try:
                unit.launch()
            except Exception as exc:  # noqa: BLE001 - reported and retried with backoff
                error = exc
            self._started(unit, error)
            return
        unit.state = State.STARTING
        unit.start_error = None

        def _launch() -> None:
            try:
                unit.launch()
            except BaseException as exc:  # noqa: BLE001 - reported by the loop
                unit.start_error = exc

        unit.thread = threading.Thread(target=_launch, name=f"restart-{unit.name}",
                                       daemon=True)
        unit.thread.start()

    def _started(self, unit: Unit, error: BaseException | None) -> None:
        now = time.monotonic()
        if error is None:
            unit.state = State.RUNNING
            unit.started_at = now
            log.warning("%s restarted (pid %s, restart %d)", unit.name, unit.pid, unit.restarts)
            self.record(unit, "restarted", f"pid {unit.pid}")
            return
        delay = unit.backoff.delay_after(0.0)
        unit.state = State.DOWN
        unit.restart_at = now + delay
        log.error("%s did not start again (%s); next try in %.0f s", unit.name, error, delay)
        self.record(unit, "restart failed", str(error)[:500])

    # --- the end --------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every unit: the children, then the services."""
        self.stop_children()
        self.stop_services()

    def stop_children(self) -> None:
        """Stop the children together (they share one grace period)."""
        from codeactions.local.children import stop_children

        with self._lock:
            children = [u for u in self.units if isinstance(u, ChildUnit)]
        stop_children([u.popen for u in children if u.popen is not None])
        for unit in children:
            unit.state = State.STOPPED

    def stop_services(self) -> None:
        """Stop the services in reverse start order; one coming back meanwhile is waited
        for first."""
        with self._lock:
            others = [u for u in self.units if not isinstance(u, ChildUnit)]
        for unit in reversed(others):
            if unit.thread is not None:
                unit.thread.join()
            try:
                unit.halt()
            except Exception:
                log.exception("stopping %s failed", unit.name)
            unit.state = State.STOPPED
