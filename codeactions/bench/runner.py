"""`make bench`: the fast path's figures, measured in one run on this machine (issue 7).

For a hello-world action in each language: the cold `docker run` of its engine image (the
baseline); in warm-pool mode (one container per run, the default) the first call of a new
code, sync latency paced at 4 requests/s and throughput at 16 concurrent clients (with how
many runs had to start their own container); in warm-environment mode the first call, sync
latency back to back and throughput at 16 clients, and the same for a resident code (one
process kept between runs, README "Run modes"); memory of the worker and of a pool and a
warm container. Then the machine's container churn ceiling (what strict mode can reach under
overload) and `GET /codelog?code_id=…&page=N` on a code with 100,000 logs. Printed, and
written as JSON under bench/results/.
"""

from __future__ import annotations

import json
import os
import platform as host_platform
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from codeactions.bench import docker_figures as figures
from codeactions.bench.cpu import CpuMeter
from codeactions.bench.load import Client, concurrent, percentile, sequential
from codeactions.bench.platform import BenchPlatform, bench_platform
from codeactions.bench.segments import segments
from codeactions.local.children import REPO_ROOT

HELLO = {
    "python": 'def Run(engine):\n    engine.result.set("hello")\n',
    "javascript": 'function Run(engine) {\n  engine.result.set("hello");\n}\n'
                  "module.exports = { Run };\n",
    "go": 'package main\n\nimport "codeactions"\n\n'
          'func Run(engine *codeactions.Engine) error {\n\treturn engine.Result.Set("hello")\n}\n',
}
LOGS_SOURCE = (
    "def Run(engine):\n    for i in range(1000):\n        engine.log.info(f'line {i}')\n"
)
PROJECT = str(uuid.UUID("00000000-0000-4000-8000-00000000be4c"))
CLIENTS = 16


class Plan:
    """How much to measure: the full run, or a quick one (to check the bench itself)."""

    def __init__(self, quick: bool) -> None:
        self.baseline_runs = 3 if quick else 10
        self.paced = 12 if quick else 60
        self.back_to_back = 40 if quick else 400
        self.seconds = 4 if quick else 12
        self.log_runs = 5 if quick else 100
        self.page_calls = 5 if quick else 30
        self.segment_calls = 10 if quick else 40
        self.settle = 2 if quick else 15


def _create(platform: BenchPlatform, language: str, source: str, mode: str,
            network: bool = True) -> str:
    response = requests.post(platform.url("/code"), params={
        "name": f"bench-{language}-{mode}", "language": language,
        "type": "endpoint", "project_uuid": PROJECT, "mode": mode,
        "network": str(network).lower(),
    }, data=source.encode(), timeout=30)
    response.raise_for_status()
    return response.json()["id"]


def _first_call_ms(platform: BenchPlatform, code_id: str) -> float:
    started = time.perf_counter()
    status, body = Client(platform.base_url).request("POST", f"/action/endpoint/{code_id}")
    elapsed = (time.perf_counter() - started) * 1000
    if status != 200:
        raise RuntimeError(f"first call of {code_id} answered {status}: {body[:300]!r}")
    return round(elapsed, 1)


def measure_language(platform: BenchPlatform, client: Any, settings: Any, language: str,
                     plan: Plan, cache_dir: Path) -> dict[str, Any]:
    from worker.images import engine_image_tag

    image = engine_image_tag(language)
    print(f"bench: {language}: cold docker run baseline …", flush=True)
    job = figures.hello_job(language, HELLO[language], client, settings, cache_dir)
    # The baseline is what the same run would cost as a cold hardened `docker run`: with
    # Docker's default network (a networked code, the default), and without (codes without).
    baseline = figures.docker_run_baseline(image, job, client, settings, plan.baseline_runs)
    offline_baseline = figures.docker_run_baseline(image, job, client, settings,
                                                   plan.baseline_runs, network=False)
    out: dict[str, Any] = {"image": image, "docker_run": baseline,
                           "docker_run_no_network": offline_baseline}
    if language == "python":
        print("bench: python: the old runtime's packages, installed vs hidden …", flush=True)
        out["packages_cost"] = figures.python_packages_cost(image, job, client, settings,
                                                            plan.baseline_runs * 4)

    print(f"bench: {language}: warm pool (one container per run) …", flush=True)
    code = _create(platform, language, HELLO[language], "pool")
    path = f"/action/endpoint/{code}"
    pool: dict[str, Any] = {"first_call_ms": _first_call_ms(platform, code)}
    sequential(platform.base_url, path, 4, rate=4)  # settle
    pool["paced_4_per_s"] = sequential(platform.base_url, path, plan.paced, rate=4).summary()
    counter = figures.ColdStartCounter(client, code)
    meter = CpuMeter(str(REPO_ROOT))
    pool["clients_16"] = concurrent(platform.base_url, path, CLIENTS, plan.seconds)
    pool["clients_16"]["cpu_ms_per_run"] = meter.per_run_ms(pool["clients_16"]["statuses"]
                                                            .get(200, 0))
    pool["clients_16"]["cold_starts"] = counter.stop()
    if language == "python":
        pool["segments_ms"] = segments(platform, code, plan.segment_calls, rate=4)
        offline = _create(platform, language, HELLO[language], "pool", network=False)
        offline_path = f"/action/endpoint/{offline}"
        sequential(platform.base_url, offline_path, 4, rate=4)
        pool["paced_4_per_s_no_network"] = sequential(platform.base_url, offline_path,
                                                      plan.paced, rate=4).summary()
        pool["ratio_no_network_to_docker_run"] = _ratio(offline_baseline,
                                                        pool["paced_4_per_s_no_network"])
    pool["ratio_to_docker_run"] = _ratio(baseline, pool["paced_4_per_s"])
    out["pool"] = pool
    time.sleep(2)  # the pool refills
    container = figures.pool_container(client, image)
    out["pool_container_mib"] = figures.container_memory_mib(client, container) if container \
        else None

    for mode in ("warm", "resident"):
        out[mode] = _measure_bound(platform, language, mode, plan, baseline)
    container = figures.warm_container(client, out["warm"]["code_id"])
    out["warm_container_mib"] = figures.container_memory_mib(client, container) if container \
        else None
    pid = platform.workers.get(language)
    out["worker_rss_mib"] = figures.process_rss_mib(pid) if pid else None
    return out


def _measure_bound(platform: BenchPlatform, language: str, mode: str, plan: Plan,
                   baseline: dict[str, Any]) -> dict[str, Any]:
    """A code bound to its own containers (mode warm or resident, README "Run modes")."""
    print(f"bench: {language}: {mode} …", flush=True)
    code = _create(platform, language, HELLO[language], mode)
    path = f"/action/endpoint/{code}"
    out: dict[str, Any] = {"code_id": code, "first_call_ms": _first_call_ms(platform, code)}
    sequential(platform.base_url, path, 20)  # settle
    out["back_to_back"] = sequential(platform.base_url, path, plan.back_to_back).summary()
    # Paced like the pool: what a JavaScript environment, which boots its next Node after
    # each run (~0.2 s), gives when calls leave it the time.
    out["paced_4_per_s"] = sequential(platform.base_url, path, plan.paced, rate=4).summary()
    concurrent(platform.base_url, path, CLIENTS, 3)  # the code's other environments start
    meter = CpuMeter(str(REPO_ROOT))
    out["clients_16"] = concurrent(platform.base_url, path, CLIENTS, plan.seconds)
    out["clients_16"]["cpu_ms_per_run"] = meter.per_run_ms(out["clients_16"]["statuses"]
                                                           .get(200, 0))
    if language == "python":
        out["segments_ms"] = segments(platform, code, plan.segment_calls)
    out["ratio_to_docker_run"] = _ratio(baseline, out["back_to_back"])
    return out


def _ratio(baseline: dict[str, Any], latencies: dict[str, Any]) -> float:
    return round(baseline["p50_ms"] / latencies["p50_ms"], 1) if latencies["p50_ms"] else 0.0


def measure_logs(platform: BenchPlatform, plan: Plan) -> dict[str, Any]:
    """A code with `plan.log_runs` × 1,000 logs (made through the platform, as users would),
    then pages at the start, middle and end of its log list."""
    print(f"bench: logs: {plan.log_runs * 1000} logs …", flush=True)
    code = _create(platform, "python", LOGS_SOURCE, "warm")
    run_ids: list[str] = []
    remaining = plan.log_runs
    while remaining:
        batch = min(20, remaining)
        response = requests.post(platform.url("/coderun/batch"), json={
            "runs": [{"code_id": code} for _ in range(batch)]}, timeout=30)
        if response.status_code == 503:
            time.sleep(1)
            continue
        response.raise_for_status()
        run_ids += [run["id"] for run in response.json()]
        remaining -= batch
    for run_id in run_ids:
        run = requests.get(platform.url(f"/coderun/{run_id}"), params={"wait": 60},
                           timeout=90).json()
        if run["status"] != "completed":
            raise RuntimeError(f"log run {run_id} ended {run['status']}: {run['result'][:200]}")
    time.sleep(plan.settle)  # the last runs' logs are still being archived to S3
    client = Client(platform.base_url)
    first = json.loads(client.request("GET", f"/codelog?code_id={code}&page=1")[1])
    last_page = first["last_page"]
    # The pages take turns, so whatever else the machine does meanwhile (autovacuum after
    # the 100,000 inserts, say) weighs on the three alike.
    times: dict[int, list[float]] = {
        page: [] for page in sorted({1, max(1, last_page // 2), last_page})}
    for _ in range(plan.page_calls):
        for page, taken in times.items():
            started = time.perf_counter()
            status, _ = client.request("GET", f"/codelog?code_id={code}&page={page}")
            taken.append((time.perf_counter() - started) * 1000)
            if status != 200:
                raise RuntimeError(f"GET /codelog page {page} answered {status}")
    pages = {str(page): {"p50_ms": round(percentile(taken, 0.5), 2),
                         "p99_ms": round(percentile(taken, 0.99), 2)}
             for page, taken in times.items()}
    client.close()
    return {"code_id": code, "total": first["total"], "last_page": last_page, "pages": pages}


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for issue 7's targets."""
    from worker.warm.environments import WARM_LANGUAGES

    checks = []
    python = results["languages"].get("python")
    if python:
        pool, warm = python["pool"], python["warm"]
        p50 = pool["paced_4_per_s"]["p50_ms"]
        checks.append(("python pool p50 ≤ 40 ms at 4/s", f"{p50} ms", p50 <= 40))
        checks.append(("python pool ≥ 6× faster than docker run",
                       f"{pool['ratio_to_docker_run']}×", pool["ratio_to_docker_run"] >= 6))
        cost = python.get("packages_cost")
        if cost:
            checks.append(("python hello world with the old runtime's packages ≤ 10 % slower",
                           f"{cost['with_packages']['p50_ms']} vs "
                           f"{cost['without_packages']['p50_ms']} ms p50 "
                           f"({cost['ratio']}×)", cost["ratio"] <= 1.10))
        offline = pool.get("paced_4_per_s_no_network")
        if offline:
            checks.append(("python pool p50 ≤ 40 ms at 4/s, code without network",
                           f"{offline['p50_ms']} ms", offline["p50_ms"] <= 40))
            ratio = pool["ratio_no_network_to_docker_run"]
            checks.append(("python pool ≥ 6× faster than docker run, without network",
                           f"{ratio}×", ratio >= 6))
    for language, measured in results["languages"].items():
        if language not in WARM_LANGUAGES:
            checks.append((f"{language} warm targets", "no warm environment: a warm "
                           f"{language} code runs one container per run", False))
            continue
        warm = measured["warm"]
        b2b = warm["back_to_back"]
        checks.append((f"{language} warm p50 ≤ 25 ms, p99 ≤ 80 ms",
                       f"{b2b['p50_ms']} / {b2b['p99_ms']} ms",
                       b2b["p50_ms"] <= 25 and b2b["p99_ms"] <= 80))
        checks.append((f"{language} warm ≥ 10× faster than docker run",
                       f"{warm['ratio_to_docker_run']}×", warm["ratio_to_docker_run"] >= 10))
        rate = warm["clients_16"]["runs_per_second"]
        checks.append((f"{language} warm ≥ 100 runs/s at 16 clients", f"{rate}/s", rate >= 100))
        # Issue 17's resident targets.
        resident = measured.get("resident")
        if resident:
            b2b = resident["back_to_back"]
            checks.append((f"{language} resident p50 ≤ 10 ms, p99 ≤ 25 ms",
                           f"{b2b['p50_ms']} / {b2b['p99_ms']} ms",
                           b2b["p50_ms"] <= 10 and b2b["p99_ms"] <= 25))
            checks.append((f"{language} resident ≥ 30× faster than docker run",
                           f"{resident['ratio_to_docker_run']}×",
                           resident["ratio_to_docker_run"] >= 30))
            rate = resident["clients_16"]["runs_per_second"]
            want = 100 if language == "javascript" else 150
            checks.append((f"{language} resident ≥ {want} runs/s at 16 clients", f"{rate}/s",
                           rate >= want))
    churn = results.get("churn_ceiling")
    if churn and python:
        overload = python["pool"]["clients_16"]
        share = overload["runs_per_second"] / churn["per_second"] if churn["per_second"] else 0
        checks.append(("strict mode under overload ≥ 85 % of churn ceiling, no errors",
                       f"{share:.0%} ({overload['runs_per_second']}/s of "
                       f"{churn['per_second']}/s), {overload['errors']} errors",
                       share >= 0.85 and overload["errors"] == 0))
    logs = results.get("logs")
    if logs:
        worst = max(page["p50_ms"] for page in logs["pages"].values())
        # Issue 17: p50 ≤ 15 ms at page 1, the middle page and the last alike.
        checks.append((f"log page of {logs['total']} logs ≤ 15 ms p50 at the first, middle "
                       "and last page", f"{worst} ms (worst p50)", worst <= 15))
    return checks


def run_bench(url: str | None, base_port: int, state_dir: Path, languages: list[str],
              quick: bool, results_dir: Path, logs_only: bool = False) -> int:
    """`logs_only`: only the log pages (a python platform, no run figures)."""
    import docker

    from shared.settings import PREFIX, Settings

    plan = Plan(quick)
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "kernel": host_platform.release(),
                    "load_average_before": os.getloadavg()[0]},
        "quick": quick, "languages": {},
    }
    with bench_platform(url, base_port, state_dir, languages) as platform:
        results["platform"] = {"url": platform.base_url, "started_by_bench": platform.own}
        settings = Settings(**{k: v for k, v in platform.env.items() if k.startswith(PREFIX)})
        client = docker.from_env(timeout=120)
        cache_dir = state_dir.absolute() / "bench-go-cache"
        for language in [] if logs_only else languages:
            results["languages"][language] = measure_language(
                platform, client, settings, language, plan, cache_dir)
        if logs_only:
            results["logs"] = measure_logs(platform, plan)
        elif "python" in languages:
            print("bench: container churn ceiling …", flush=True)
            from worker.images import engine_image_tag

            job = figures.hello_job("python", HELLO["python"], client, settings, cache_dir)
            results["churn_ceiling"] = figures.churn_ceiling(
                client, settings, engine_image_tag("python"), job, seconds=plan.seconds)
            results["churn_ceiling_no_network"] = figures.churn_ceiling(
                client, settings, engine_image_tag("python"), job, seconds=plan.seconds,
                network=False)
            print("bench: what the sandbox's hardening costs a container …", flush=True)
            results["hardening_cost"] = figures.hardening_cost(
                client, settings, engine_image_tag("python"), job, seconds=plan.seconds)
            results["logs"] = measure_logs(platform, plan)
        _delete_bench_codes(platform)
    results["machine"]["load_average_after"] = os.getloadavg()[0]
    results["targets"] = [{"target": t, "measured": m, "met": ok} for t, m, ok in targets(results)]
    _print(results)
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / f"bench-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nbench: figures written to {out}")
    return 0


def _delete_bench_codes(platform: BenchPlatform) -> None:
    codes = requests.get(platform.url("/code"), params={"project_uuid": PROJECT}, timeout=30)
    for code in codes.json() if codes.ok else []:
        requests.delete(platform.url(f"/code/{code['id']}"), timeout=60)


def _pair(resident: dict[str, Any] | None) -> str:
    if not resident:
        return ""
    b2b = resident["back_to_back"]
    return (f"{b2b['p50_ms']:>11.1f}/{b2b['p99_ms']:<5.1f}ms"
            f"{resident['clients_16']['runs_per_second']:>8.1f}/s")


def _print(results: dict[str, Any]) -> None:
    print("\n== Code Actions fast path ==")
    machine = results["machine"]
    print(f"{machine['cpus']} CPUs, load average {machine['load_average_before']:.1f} before, "
          f"{machine['load_average_after']:.1f} after (other work on the machine skews it all)")
    print("docker run = a hardened `docker run` with Docker's default network (as a code with"
          " network, the default); pool, warm and resident codes have network too (their own"
          " link)\n")
    header = (f"{'':<11}{'docker run':>11}{'pool 1st':>10}{'pool p50/p99 @4/s':>20}"
              f"{'pool 16c':>10}{'cold':>6}{'warm 1st':>10}{'warm p50/p99':>15}"
              f"{'warm 16c':>10}{'resident p50/p99':>19}{'res. 16c':>10}")
    print(header)
    for language, m in results["languages"].items():
        pool, warm = m["pool"], m["warm"]
        paced, b2b = pool["paced_4_per_s"], warm["back_to_back"]
        print(f"{language:<11}{m['docker_run']['p50_ms']:>9.0f}ms{pool['first_call_ms']:>8.0f}ms"
              f"{paced['p50_ms']:>11.1f}/{paced['p99_ms']:<6.1f}ms"
              f"{pool['clients_16']['runs_per_second']:>8.1f}/s"
              f"{pool['clients_16']['cold_starts']:>6}"
              f"{warm['first_call_ms']:>8.0f}ms{b2b['p50_ms']:>7.1f}/{b2b['p99_ms']:<5.1f}ms"
              f"{warm['clients_16']['runs_per_second']:>8.1f}/s"
              f"{_pair(m.get('resident'))}")
    print("warm p50/p99 @4/s:  " + "  ".join(
        f"{lang}: {m['warm']['paced_4_per_s']['p50_ms']}/{m['warm']['paced_4_per_s']['p99_ms']} ms"
        for lang, m in results["languages"].items()))
    print("\nmemory (MiB):  " + "  ".join(
        f"{lang}: worker {m['worker_rss_mib']}, pool container {m['pool_container_mib']}, "
        f"warm container {m['warm_container_mib']}" for lang, m in results["languages"].items()))
    for key, label in (("churn_ceiling", "with the sandbox link"),
                       ("churn_ceiling_no_network", "without network")):
        if key in results:
            churn = results[key]
            print(f"container churn ceiling {label}: {churn['per_second']}/s "
                  f"({churn['containers']} in {churn['seconds']} s, {churn['threads']} threads)")
    cost = results.get("hardening_cost")
    if cost:
        print(f"sandbox hardening (issue 16) per one-run container: "
              f"{cost['hardened']['mean_ms']} vs {cost['plain']['mean_ms']} ms mean "
              f"({cost['ratio']}×; p50 {cost['hardened']['p50_ms']} vs "
              f"{cost['plain']['p50_ms']} ms, {cost['hardened']['runs']}+"
              f"{cost['plain']['runs']} runs, {cost['threads']} threads alternating)")
    python = results["languages"].get("python")
    if python:
        offline = python["pool"].get("paced_4_per_s_no_network")
        if offline:
            print(f"python pool @4/s, code without network: p50 {offline['p50_ms']} ms, "
                  f"p99 {offline['p99_ms']} ms (docker run without network: "
                  f"{python['docker_run_no_network']['p50_ms']} ms)")
        for mode in ("pool", "warm", "resident"):
            if mode not in python:
                continue
            parts = python[mode].get("segments_ms")
            if parts:
                print(f"python {mode}, where a call's time goes (median ms): " + ", ".join(
                    f"{name} {value}" for name, value in parts.items()))
            cpu = python[mode]["clients_16"].get("cpu_ms_per_run")
            if cpu:
                print(f"python {mode} at 16 clients, CPU ms per run: " + ", ".join(
                    f"{name} {value}" for name, value in cpu.items()))
    if "logs" in results:
        logs = results["logs"]
        pages = ", ".join(f"page {page}: {t['p50_ms']}/{t['p99_ms']} ms"
                          for page, t in logs["pages"].items())
        print(f"GET /codelog on {logs['total']} logs (p50/p99): {pages}")
    print("\ntargets:")
    for target in results["targets"]:
        mark = "met " if target["met"] else "MISS"
        print(f"  [{mark}] {target['target']}: {target['measured']}")
