"""A JavaScript code in resident mode through the whole platform (API, worker, its resident
environment): module state lives on between the runs one environment serves, a run that
throws fails alone, and one that exits gets the code a fresh process (engines/PROTOCOL.md,
"Resident mode")."""

from __future__ import annotations

import json

import docker
import docker.errors
import requests

from .helpers import PROJECT, call

COUNTER = """
let runs = 0;
async function Run(engine) {
  runs += 1;
  const how = engine.params.get("how");
  if (how === "throw") throw new Error("asked to");
  if (how === "exit") process.exit(2);
  engine.result.set({ runs }, { contentType: "json" });
}
"""


def _run(platform, code_id: str, **params: str) -> dict:  # noqa: ANN001
    """Call the code's endpoint; the stored run (with its container)."""
    response = call(platform, code_id, params=params)
    if response.status_code >= 400:
        run_id = response.json()["run_id"]
    else:  # one call at a time: the code's newest run
        runs = requests.get(platform.url("/coderun"), params={"code_id": code_id}, timeout=10)
        run_id = runs.json()[0]["id"]
    return requests.get(platform.url(f"/coderun/{run_id}"), timeout=10).json()


def _kind(container_id: str) -> str | None:
    client = docker.from_env()
    try:
        return client.containers.get(container_id).labels.get("codeactions.kind")
    except docker.errors.NotFound:
        return None
    finally:
        client.close()


def test_a_resident_javascript_code_keeps_its_module_state(platform) -> None:  # noqa: ANN001
    response = requests.post(platform.url("/code"), json={
        "name": "resident-counter", "language": "javascript", "type": "endpoint",
        "project_uuid": PROJECT, "source": COUNTER, "mode": "resident"}, timeout=10)
    assert response.status_code == 201, response.text
    code_id = response.json()["id"]
    # The first calls may go the pool's way while the code's environment starts.
    served: dict[str, list[int]] = {}
    for _ in range(30):
        run = _run(platform, code_id)
        assert run["status"] == "completed", run
        served.setdefault(run["container_id"], []).append(json.loads(run["result"])["runs"])
        if max(len(counts) for counts in served.values()) >= 3:
            break
    container, counts = max(served.items(), key=lambda item: len(item[1]))
    assert _kind(container) == "warm"
    assert counts == list(range(1, len(counts) + 1)), served

    failed = _run(platform, code_id, how="throw")
    assert failed["status"] == "failed" and failed["container_id"] == container, failed
    after = _run(platform, code_id)
    assert after["container_id"] == container
    assert json.loads(after["result"])["runs"] == len(counts) + 2  # the same process

    exited = _run(platform, code_id, how="exit")
    assert exited["status"] == "failed" and exited["container_id"] == container, exited
    # Whichever container serves the next runs (the environment's new Node, or another one
    # while it boots), the code starts from fresh state: nothing of the exited process.
    fresh: dict[str, list[int]] = {}
    for _ in range(4):
        run = _run(platform, code_id)
        assert run["status"] == "completed", run
        fresh.setdefault(run["container_id"], []).append(json.loads(run["result"])["runs"])
    for served_by, counts in fresh.items():
        # Another environment of the code may have served before: it counts on.
        start = served[served_by][-1] + 1 if served_by in served and served_by != container else 1
        assert counts == list(range(start, start + len(counts))), (served, fresh)
