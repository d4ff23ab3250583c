"""`make chaos`: break the platform's parts one after another under load and count what
happened to every run and every caller (issue 14).

One platform of its own (`make run`'s, under its supervisor, on its own ports, state
directory and Docker engine). Per scenario: fresh codes, the load (sync calls and async
runs), a few seconds, the fault(s), the load kept up for a while after the part is back,
then a settle period in which no new work comes; then the runs are read from the database.
Printed, and written as JSON under chaos/results/.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from codeactions.chaos import faults as f
from codeactions.chaos.codes import create_codes, warm_up
from codeactions.chaos.load import Load, LoadPlan
from codeactions.chaos.platform import CHAOS_BACKOFF_RESET, ChaosPlatform, chaos_platform
from codeactions.chaos.report import (
    analyse,
    pending_runs,
    print_scenario,
    print_summary,
    read_runs,
)


@dataclass
class Plan:
    """How long and how often: the full run, or a quick one (to check the harness)."""

    quick: bool

    @property
    def worker_kills(self) -> int:
        return 3 if self.quick else 20

    @property
    def down_seconds(self) -> float:
        return 10.0

    @property
    def before(self) -> float:
        return 4.0 if self.quick else 8.0

    @property
    def after(self) -> float:
        """Load kept up after the last fault's part is back: recovery is seen within it."""
        return 25.0 if self.quick else 40.0

    @property
    def settle(self) -> float:
        return 45.0 if self.quick else 60.0


@dataclass
class Scenario:
    name: str
    title: str
    inject: Callable[[ChaosPlatform, Plan, Probe], list[f.Fault]]
    affected: list[str] | None = None  # languages whose recovery counts (None: all)


def _worker_kills(language: str) -> Callable:
    def inject(platform: ChaosPlatform, plan: Plan, probe: Probe):  # noqa: ANN202
        faults: list[f.Fault] = []
        for _ in range(plan.worker_kills):
            faults.append(f.kill_worker(
                platform, language, lambda: probe.in_flight(language),
                lambda since: probe.completed_since(language, since),
                faults[-1] if faults else None, CHAOS_BACKOFF_RESET))
        return faults
    return inject


@dataclass
class Probe:
    """The scenario's runs as the database has them and the load's answers, for the fault
    injectors."""

    db: Any
    codes: dict[str, str]
    load: Load

    def in_flight(self, language: str) -> bool:
        return self._exists("status = 'started'", language)

    def completed_since(self, language: str, since: float) -> bool:
        """Both kinds served again: an async run completed and a sync caller got a 200."""
        return any(a.kind == "sync" and a.language == language and a.ok
                   and a.answered >= since for a in list(self.load.answers)) \
            and self._exists("status = 'completed' AND finished_at >= to_timestamp(:since) "
                             "AND params->>'kind' = 'async'", language, since=since)

    def _exists(self, condition: str, language: str, **values: object) -> bool:
        with self.db.connect() as conn:
            return conn.execute(text(
                f"SELECT 1 FROM coderuns WHERE code_id = CAST(:code AS uuid) AND {condition} "
                "LIMIT 1"), {"code": self.codes[language], **values}).first() is not None


def _service(name: str) -> Callable:
    return lambda platform, plan, _: [f.kill_service(platform, name, plan.down_seconds)]


SCENARIOS = [
    Scenario("worker-python", "SIGKILL the Python worker mid-run, again and again",
             _worker_kills("python"), ["python"]),
    Scenario("rabbitmq", "kill -9 RabbitMQ, 10 s down, then restarted", _service("rabbitmq")),
    Scenario("postgres", "kill -9 PostgreSQL, 10 s down, then restarted", _service("postgres")),
    Scenario("redis", "kill -9 Redis, 10 s down, then restarted", _service("redis")),
    Scenario("dockerd", "restart dockerd (SIGTERM, started again by the supervisor)",
             lambda platform, plan, _: [f.restart_dockerd(platform)]),
    Scenario("api-worker", "SIGKILL one of the API's gunicorn worker processes",
             lambda platform, plan, _: [f.kill_api_worker(platform)]),
    Scenario("api-master", "SIGKILL the API's gunicorn master",
             lambda platform, plan, _: [f.kill_api_master(platform)]),
]


def run_scenario(platform: ChaosPlatform, scenario: Scenario, plan: Plan,
                 languages: list[str], db: Any) -> dict[str, Any]:
    print(f"\nchaos: {scenario.name}: {scenario.title} …", flush=True)
    codes = create_codes(platform.api_url, scenario.name, languages)
    failing = warm_up(platform.api_url, codes)
    if failing:
        raise RuntimeError(f"the scenario's codes do not run: {failing}")

    dead_before = _dead_sandboxes(platform)
    load = Load(platform.api_url, codes, LoadPlan())
    events_before = len(platform.supervisor.events)
    load.start()
    try:
        time.sleep(plan.before)
        faults = scenario.inject(platform, plan, Probe(db, codes, load))
        backs = [fault.back for fault in faults if fault.back is not None]
        time.sleep(max(0.0, (max(backs) if backs else time.time()) + plan.after - time.time()))
    finally:
        load.stop()
    settle = _settle(db, list(codes.values()), plan.settle)
    with db.connect() as conn:
        runs = read_runs(conn, codes)
    result = analyse(scenario.name, scenario.title, languages, scenario.affected or languages,
                     faults, load.answers, runs, settle,
                     _sandboxes_after_sweep(platform, ignore=dead_before))
    result["supervisor_events"] = [
        {"at": e.at, "unit": e.unit, "what": e.what, "detail": e.detail}
        for e in platform.supervisor.events[events_before:]]
    result["answers"] = [a.as_json() for a in load.answers]
    print_scenario(result)
    return result


def _settle(db: Any, code_ids: list[str], seconds: float) -> dict[str, Any]:
    """Wait, with no new work, until no run of the scenario is queued or started (or
    `seconds` pass: what is still pending then is stranded)."""
    started = time.monotonic()
    pending = None
    while time.monotonic() - started < seconds:
        try:
            with db.connect() as conn:
                pending = pending_runs(conn, code_ids)
        except Exception:  # noqa: BLE001 - the database may still be coming back
            pending = None
        if pending == 0:
            break
        time.sleep(1)
    return {"seconds": round(time.monotonic() - started, 1), "limit_s": seconds,
            "pending_at_end": pending}


def _sandbox_containers(platform: ChaosPlatform) -> list[dict[str, Any]]:
    import docker

    client = docker.DockerClient(base_url=platform.local.env["DOCKER_HOST"], timeout=30)
    try:
        return client.api.containers(all=True, filters={"label": "codeactions.sandbox"})
    finally:
        client.close()


def _dead_sandboxes(platform: ChaosPlatform) -> set[str]:
    try:
        return {c["Id"] for c in _sandbox_containers(platform)
                if c["State"] in ("created", "exited", "dead")}
    except Exception:  # noqa: BLE001 - the engine may be down: nothing to exclude then
        return set()


def _sandboxes(platform: ChaosPlatform, ignore: set[str]) -> dict[str, int]:
    """Sandbox containers on the private engine after the settle period, by state; dead
    ones an earlier scenario left are not this one's."""
    try:
        states: dict[str, int] = {}
        for container in _sandbox_containers(platform):
            if container["Id"] not in ignore:
                states[container["State"]] = states.get(container["State"], 0) + 1
        return states
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        return {"unknown": -1, "error": str(exc)[:200]}  # type: ignore[dict-item]


#: Dead sandboxes are removed by the workers' next sweep (worker/upkeep.py, every 30 s, of
#: sandboxes dead for over 30 s): that is the promise measured, not an instant removal.
SWEEP_WAIT = 75.0


def _sandboxes_after_sweep(platform: ChaosPlatform, ignore: set[str]) -> dict[str, int]:
    """`_sandboxes` once no dead one is left, or after the next sweep had its chance."""
    deadline = time.monotonic() + SWEEP_WAIT
    while True:
        states = _sandboxes(platform, ignore)
        dead = sum(n for state, n in states.items() if state in ("created", "exited", "dead"))
        if not dead or time.monotonic() >= deadline:
            return states
        time.sleep(2)


def _commit() -> str:
    from codeactions.local.children import REPO_ROOT

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    return head + ("+uncommitted" if dirty else "")


def run_chaos(base_port: int, state_dir: Path, languages: list[str], quick: bool,
              only: list[str] | None, results_dir: Path) -> int:
    plan = Plan(quick)
    chosen = [s for s in SCENARIOS if not only or s.name in only]
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"), "commit": _commit(),
        "quick": quick, "languages": languages,
        "machine": {"cpus": os.cpu_count(), "load_average_before": os.getloadavg()[0]},
        "scenarios": [],
    }
    # Ctrl-C: stop the load and the platform cleanly (the context manager's finally).
    signal.signal(signal.SIGTERM, _interrupt)
    out = results_dir / f"chaos-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    with chaos_platform(base_port, state_dir, languages) as platform:
        report["platform"] = {"api": platform.api_url, "state_dir": str(state_dir)}
        db = create_engine(platform.settings.sqlalchemy_url, pool_pre_ping=True)
        report["executions_column"] = _has_column(db)
        probes = create_codes(platform.api_url, "probe", languages)
        try:
            for scenario in chosen:
                try:
                    result = run_scenario(platform, scenario, plan, languages, db)
                except Exception as exc:  # noqa: BLE001 - the next scenarios still run
                    print(f"chaos: {scenario.name} could not run: {exc}", flush=True)
                    result = {"scenario": scenario.name, "title": scenario.title,
                              "error": str(exc)[:2000], "targets": []}
                report["scenarios"].append(result)
                result["manual_steps"] = ensure_serving(platform, probes)
                result["targets"].append({
                    "target": "no manual step", "met": not result["manual_steps"],
                    "measured": "; ".join(result["manual_steps"]) or "none"})
                for step in result["manual_steps"]:
                    print(f"  [MISS] manual step: {step}", flush=True)
                _write(report, out)
        finally:
            db.dispose()
    report["machine"]["load_average_after"] = os.getloadavg()[0]
    print_summary(report["scenarios"])
    _write(report, out)
    print(f"\nchaos: measured at commit {report['commit']}; figures written to {out}")
    return 0


def ensure_serving(platform: ChaosPlatform, probes: dict[str, str],
                   seconds: float = 60.0) -> list[str]:
    """After a scenario: every language's worker must serve again by itself within
    `seconds`. One that does not is SIGKILLed so that the supervisor restarts it — the
    manual step an operator would have had to take, reported as such."""
    failing = warm_up(platform.api_url, probes, seconds)
    steps = []
    for language, answer in failing.items():
        pid = platform.pid(f"worker-{language}")
        steps.append(f"worker-{language} still not serving {seconds:.0f} s after the "
                     f"scenario (last answer: {answer[:120]}); restarted by hand")
        if pid:
            os.kill(pid, signal.SIGKILL)
    if failing and warm_up(platform.api_url, probes, 180):
        raise RuntimeError("the platform does not serve even after its workers restarted")
    return steps


def _write(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _has_column(db: Any) -> bool:
    from codeactions.chaos.report import has_executions_column

    with db.connect() as conn:
        return has_executions_column(conn)
