"""The faults `make chaos` injects, each into the running chaos platform, and how it tells
that the broken part is back (the moment recovery is measured from)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from codeactions.chaos.platform import ChaosPlatform, worker_answers
from codeactions.local.services.docker_engine import docker_engine_answers
from codeactions.local.supervisor import State

BACK_TIMEOUT = 180.0


@dataclass
class Fault:
    """One injected fault: when, what, and when the part answered again (None: never)."""

    what: str
    at: float  # time.time()
    back: float | None = None

    @property
    def outage(self) -> float | None:
        return None if self.back is None else self.back - self.at

    def as_json(self) -> dict[str, Any]:
        return {"what": self.what, "at": self.at, "back": self.back,
                "outage_s": None if self.outage is None else round(self.outage, 2)}


def wait_until(check: Callable[[], object], seconds: float = BACK_TIMEOUT) -> float | None:
    """time.time() when `check()` first holds, or None after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return time.time()
        except Exception:  # noqa: BLE001, S110 - a probe failing means "not yet"
            pass
        time.sleep(0.2)
    return None


def _kill(pid: int | None, sig: signal.Signals = signal.SIGKILL) -> int:
    if not pid:
        raise RuntimeError("nothing to kill: the process is not running")
    os.kill(pid, sig)
    return pid


def kill_worker(platform: ChaosPlatform, language: str, run_in_flight: Callable[[], bool],
                served_since: Callable[[float], bool], previous: Fault | None,
                min_uptime: float) -> Fault:
    """SIGKILL the language's worker while one of the scenario's runs is `started` on it.
    Before that, the worker restarted after the `previous` kill must have been up
    `min_uptime` s (its restart delay is then back to 1 s) and have served again, a sync
    call and an async run (else every kill would land in the same restart window, and the
    next fault would cut this one's recovery short); each wait gives up after 120 s and
    the kill goes ahead. Back when a new worker process answers a ping on the broker."""
    unit = platform.supervisor.unit(f"worker-{language}")
    wait_until(lambda: unit.state is State.RUNNING
               and time.monotonic() - unit.started_at >= min_uptime, 120)
    if previous is not None and previous.back is not None:
        wait_until(lambda: served_since(previous.back), 120)
    in_flight = wait_until(run_in_flight, 30) is not None
    pid = _kill(unit.pid)
    fault = Fault(f"SIGKILL worker-{language} (pid {pid})"
                  + ("" if in_flight else ", no run in flight"), time.time())
    fault.back = wait_until(lambda: unit.pid not in (None, pid)
                            and worker_answers(platform, language))
    return fault


def kill_service(platform: ChaosPlatform, name: str, down_seconds: float) -> Fault:
    """kill -9 an embedded service, keep it down `down_seconds` (the supervisor holds its
    restart), then let the supervisor start it; back when it answers its health probe."""
    server = platform.server(name)
    platform.supervisor.hold(name)
    try:
        pid = platform.broker_pid() if name == "rabbitmq" else platform.pid(name)
        _kill(pid)
        fault = Fault(f"kill -9 {name} (pid {pid}), {down_seconds:.0f} s down", time.time())
        time.sleep(down_seconds)
    finally:
        platform.supervisor.release(name)
    fault.back = wait_until(lambda: platform.pid(name) not in (None, pid)
                            and server.is_healthy())
    return fault


def restart_dockerd(platform: ChaosPlatform) -> Fault:
    """Stop dockerd as a service manager would (SIGTERM: it stops its containers, then
    exits); the supervisor starts it again. Back when the new engine answers."""
    pid = _kill(platform.pid("dockerd"), signal.SIGTERM)
    fault = Fault(f"restart dockerd (SIGTERM pid {pid})", time.time())
    url = platform.local.stack.docker.base_url
    fault.back = wait_until(lambda: platform.pid("dockerd") not in (None, pid)
                            and docker_engine_answers(url))
    return fault


def kill_api_worker(platform: ChaosPlatform) -> Fault:
    """SIGKILL one of gunicorn's worker processes; back when its master has replaced it."""
    before = platform.api_worker_pids()
    pid = _kill(max(before) if before else None)
    fault = Fault(f"SIGKILL an API worker process (pid {pid})", time.time())
    fault.back = wait_until(lambda: pid not in platform.api_worker_pids()
                            and len(platform.api_worker_pids()) >= platform.api_workers)
    return fault


def kill_api_master(platform: ChaosPlatform) -> Fault:
    """SIGKILL gunicorn's master; back when a new API answers /healthz."""
    pid = _kill(platform.pid("api"))
    fault = Fault(f"SIGKILL the API's master process (pid {pid})", time.time())
    fault.back = wait_until(lambda: platform.pid("api") not in (None, pid) and requests.get(
        platform.api_url + "/healthz", timeout=2).status_code == 200)
    return fault
