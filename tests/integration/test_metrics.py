"""Prometheus metrics after real runs: the API's (summed over its 2 gunicorn processes, the
seed's names and labels) and each worker's own, on its own port."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TEST_API_METRICS_DIR
from tests.integration.helpers import call, create_code

HELLO = "def Run(engine):\n    engine.log.info('hi')\n    engine.result.set('ok')\n"
LOG_FLOOD = "def Run(engine):\n    for i in range(5000):\n        engine.log.info(str(i))\n"
HELLO_JS = "module.exports = { Run: (engine) => engine.result.set('ok') };\n"


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, response.text
    samples: dict[tuple[str, frozenset], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def test_api_metrics_add_up_across_gunicorn_workers(platform):
    project = str(uuid.uuid4())
    with ThreadPoolExecutor(8) as pool:  # concurrent, so both gunicorn processes serve
        codes = list(pool.map(
            lambda i: create_code(platform, HELLO, project_uuid=project, name=f"m{i}"),
            range(16),
        ))
    for code in codes[:3]:
        response = requests.patch(platform.url(f"/code/{code['id']}"), params={"name": "renamed"},
                                  timeout=10)
        assert response.status_code == 200, response.text
    target = codes[0]["id"]
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _: call(platform, target).status_code, range(6)))
    assert statuses == [200] * 6

    scrapes = [scrape(platform.url("/metrics")) for _ in range(6)]
    for samples in scrapes:  # whichever process answers, the totals are the fleet's
        assert value(samples, "ca_code_created_count", project_uuid=project) == 16
        assert value(samples, "ca_code_created_count", project_uuid=project,
                     code_id=codes[5]["id"]) == 1
        assert value(samples, "ca_code_updated_count", project_uuid=project) == 3
        assert value(samples, "ca_run_count", project_uuid=project, code_id=target) == 6
        assert value(samples, "ca_run_elapsed_count", project_uuid=project, code_id=target) == 6
        assert value(samples, "ca_run_elapsed_bucket", project_uuid=project, code_id=target,
                     le="+Inf") == 6
        assert value(samples, "workerpool_tasks_submitted_total", language="python") >= 6
        assert value(samples, "flask_http_request_total", method="POST", status="201") >= 16
        assert value(samples, "flask_http_request_duration_seconds_count", method="POST",
                     status="201", url_rule="/code") >= 16
        # The pool, per language: capacity, depth, and the live workers' slots (4 each).
        for language in platform.worker_metrics_ports:
            assert value(samples, "workerpool_queue_capacity", language=language) == 100
            assert ("workerpool_queue_size", frozenset({("language", language)})) in samples
            assert value(samples, "workerpool_workers_total", language=language) == 4
            assert value(samples, "codeactions_workers_live", language=language) == 1
    # No series per code id in the request metrics: routes are grouped by rule.
    assert not any(target in dict(ls).get("url_rule", "") for (_, ls) in scrapes[0])

    # Both gunicorn processes recorded some of the creations; /metrics summed them.
    per_process = {}
    for path in TEST_API_METRICS_DIR.glob("gauge_sum_*.db"):
        created = sum(
            entry[1] for entry in MmapedDict.read_all_values_from_file(str(path))
            if '"ca_code_created_count"' in entry[0] and project in entry[0]
        )
        if created:
            per_process[path.name] = created
    assert len(per_process) >= 2, per_process
    assert sum(per_process.values()) == 16


def test_workers_export_their_own_run_metrics(platform):
    python_url = f"http://127.0.0.1:{platform.worker_metrics_ports['python']}/metrics"
    js_url = f"http://127.0.0.1:{platform.worker_metrics_ports['javascript']}/metrics"
    before, js_before = scrape(python_url), scrape(js_url)

    ok = create_code(platform, HELLO)
    flood = create_code(platform, LOG_FLOOD)
    js = create_code(platform, HELLO_JS, language="javascript")
    assert call(platform, ok["id"]).status_code == 200
    assert call(platform, ok["id"]).status_code == 200
    assert call(platform, flood["id"]).status_code == 500  # killed at the log limit
    assert call(platform, js["id"]).status_code == 200

    after, js_after = scrape(python_url), scrape(js_url)

    def grew(name: str, samples=after, base=before, **labels: str) -> float:  # noqa: ANN001
        return value(samples, name, **labels) - value(base, name, **labels)

    assert grew("codeactions_runs_total", language="python", status="completed",
                reason="completed") == 2
    assert grew("codeactions_runs_total", language="python", status="failed",
                reason="log_limit") == 1
    assert grew("codeactions_sandbox_kills_total", language="python", reason="log_limit") == 1
    assert grew("workerpool_tasks_completed_total", language="python") == 2
    assert grew("workerpool_tasks_failed_total", language="python") == 1
    assert grew("workerpool_queue_wait_seconds_count", language="python") == 3
    assert grew("workerpool_task_duration_seconds_count", language="python") == 3
    assert grew("codeactions_container_start_seconds_count", language="python") == 3
    assert grew("codeactions_runs_total", js_after, js_before, language="javascript",
                status="completed") == 1
    # Each worker reports only its own language.
    assert value(after, "codeactions_runs_total", language="javascript") == 0


def test_every_metric_the_dashboard_reads_is_exported(platform):
    """The provisioned Grafana dashboard queries only names the platform really serves."""
    import json
    import re

    from tests.conftest import REPO_ROOT

    call(platform, create_code(platform, HELLO)["id"])  # so every family has samples
    exported = set()
    for url in [platform.url("/metrics"), *(f"http://127.0.0.1:{port}/metrics"
                                            for port in platform.worker_metrics_ports.values())]:
        exported |= {name for name, _ in scrape(url)}
    dashboard = json.loads(
        (REPO_ROOT / "deploy" / "grafana" / "dashboards" / "codeactions.json").read_text())
    functions = {"sum", "rate", "max", "by", "histogram_quantile", "topk", "le", "language",
                 "status", "code_id", "reason", "url_rule"}
    queried = {
        name
        for panel in dashboard["panels"] for target in panel["targets"]
        for name in re.findall(r"[a-z_][a-z0-9_]*", re.sub(r'"[^"]*"|\[[^\]]*\]', "",
                                                             target["expr"]))
        if name not in functions
    }
    assert queried and queried <= exported, queried - exported


def test_busy_slots_show_a_run_in_progress(platform):
    """`workerpool_workers_busy` comes from the workers' heartbeats (every few seconds)."""
    import time

    sleeper = create_code(platform, "import time\ndef Run(engine):\n    time.sleep(12)\n",
                          type="flow", timeout=30)
    run = requests.post(platform.url("/coderun"), json={"code_id": sleeper["id"]}).json()

    def busy() -> float:
        return value(scrape(platform.url("/metrics")), "workerpool_workers_busy",
                     language="python")

    deadline = time.monotonic() + 11
    seen = 0.0
    while time.monotonic() < deadline and not seen:
        seen = busy()
        time.sleep(0.5)
    assert seen >= 1
    done = requests.get(platform.url(f"/coderun/{run['id']}"), params={"wait": 30}).json()
    assert done["status"] == "completed"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and busy():
        time.sleep(0.5)
    assert busy() == 0


def test_a_replaced_resident_process_is_counted(platform):
    """A resident run that crashes costs its process: the next run starts fresh, and the
    worker's counter says so (a steady rise is a leaking or failing resident code)."""
    url = f"http://127.0.0.1:{platform.worker_metrics_ports['python']}/metrics"
    name = "codeactions_resident_processes_replaced_total"
    code = create_code(platform, "import os\nruns = 0\n\ndef Run(engine):\n    global runs\n"
                       "    runs += 1\n    if engine.params.get('crash'):\n        os._exit(3)\n"
                       "    engine.result.set(str(runs))\n", mode="resident")
    assert call(platform, code["id"]).status_code == 200  # its environment is started
    before = value(scrape(url), name)
    deadline = time.monotonic() + 60
    # A call that finds the environment still busy goes to the pool: crash until one lands.
    while value(scrape(url), name) == before and time.monotonic() < deadline:
        assert call(platform, code["id"], params={"crash": "1"}).status_code == 500
        time.sleep(0.5)
    assert value(scrape(url), name) > before
