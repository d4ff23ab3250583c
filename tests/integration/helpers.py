"""Small conveniences for talking to the test platform over HTTP."""

from __future__ import annotations

import uuid

import requests

PROJECT = "5b5c5e8e-7d0a-4b59-9a36-0b9d7b8c1a11"


def create_code(
    platform,  # noqa: ANN001
    source: str,
    *,
    type: str = "endpoint",
    language: str = "python",
    project_uuid: str = PROJECT,
    timeout: int | None = None,
    name: str | None = None,
    warm: bool | None = None,
    network: bool | None = None,
    compat: str | None = None,
    mode: str | None = None,
) -> dict:
    params = {
        "name": name or f"test-{uuid.uuid4().hex[:8]}",
        "language": language,
        "type": type,
        "project_uuid": project_uuid,
    }
    if timeout is not None:
        params["timeout"] = timeout
    if warm is not None:
        params["warm"] = str(warm).lower()
    if mode is not None:
        params["mode"] = mode
    if network is not None:
        params["network"] = str(network).lower()
    if compat is not None:
        params["compat"] = compat
    response = requests.post(platform.url("/code"), params=params, data=source.encode(),
                             timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def call(platform, code_id: str, method: str = "POST", **kwargs) -> requests.Response:  # noqa: ANN001
    kwargs.setdefault("timeout", 120)
    return requests.request(method, platform.url(f"/action/endpoint/{code_id}"), **kwargs)


def run_now(platform, code_id: str, **kwargs) -> dict:  # noqa: ANN001
    """`POST /run/<id>`: the finished run as JSON (with its `container_id`)."""
    response = requests.post(platform.url(f"/run/{code_id}"), timeout=120, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()["result"]


def container_gone(container_id: str, seconds: float = 20) -> bool:
    """Used containers are removed in the background: wait for it."""
    import time

    import docker
    import docker.errors

    client = docker.from_env()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                client.containers.get(container_id)
            except docker.errors.NotFound:
                return True
            time.sleep(0.2)
        return False
    finally:
        client.close()


def _waits_for_a_run(command: str, resident: bool) -> bool:
    if resident and (command.endswith(" resident") or command == "action"):
        return True  # the kept process: JavaScript's node, Go's program
    return (command.endswith((" serve", " warm"))
            or command.split(" ")[0] == "/opt/codeactions/supervisor")


def no_run_leftovers(container_id: str, seconds: float = 20, resident: bool = False) -> bool:
    """Nothing of a run remains: its one-run container is gone, or (a warm environment) only
    its supervisor is left in it, with (Python, JavaScript) the next run's process waiting
    for its job: the engine's `serve` command (JavaScript: the supervisor binary, and a node
    started with `warm` as its last argument). `resident`: the process waiting may be the
    kept one (Python's `serve`, JavaScript's node started with `resident` last, Go's program
    `action`), and nothing else of the run. Every process left must be asleep."""
    import time

    import docker
    import docker.errors

    client = docker.from_env()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                container = client.containers.get(container_id)
                if container.labels.get("codeactions.kind") == "warm":
                    top = container.top(ps_args="-o pid,stat,args")
                    state, command = (top["Titles"].index(t) for t in ("STAT", "COMMAND"))
                    # None while the container is stopping
                    processes = top["Processes"] or []
                    # Waiting means asleep too: a process spinning under a waiting
                    # process's name (a kept process whose run never ended) is not.
                    if len(processes) <= 2 and all(
                        _waits_for_a_run(row[command], resident) and row[state][0] != "R"
                        for row in processes
                    ):
                        return True
            except docker.errors.NotFound:
                return True
            except docker.errors.APIError:  # stopping while we looked
                pass
            time.sleep(0.2)
        return False
    finally:
        client.close()
