"""A worker's sweep (worker/preparation.py, run by its upkeep every 30 s) removes what a Docker
restart leaves of its own sandboxes — exited ones and ones created but never started — and
nothing that still runs."""

from __future__ import annotations

import time
import uuid

from worker.preparation import sweep_leftovers


def test_the_sweep_removes_dead_and_never_started_sandboxes_and_keeps_running_ones(
        docker_client, python_image: str) -> None:  # noqa: ANN001
    name = f"sweep-{uuid.uuid4().hex[:8]}"
    labels = {"codeactions.sandbox": "1", "codeactions.worker": name}

    def make(command: list[str], start: bool) -> str:
        container = docker_client.api.create_container(
            python_image, entrypoint=command, labels=labels, network_disabled=True)
        if start:
            docker_client.api.start(container["Id"])
        return container["Id"]

    never_started = make(["true"], start=False)
    exited = make(["true"], start=True)
    running = make(["sleep", "60"], start=True)
    try:
        docker_client.api.wait(exited, timeout=30)
        assert sweep_leftovers(docker_client, name) == 0  # within the grace: all kept
        time.sleep(1.1)
        assert sweep_leftovers(docker_client, name, grace=1) == 2
        left = {c["Id"]: c["State"] for c in docker_client.api.containers(
            all=True, filters={"label": f"codeactions.worker={name}"})}
        assert left == {running: "running"}
        assert never_started not in left and exited not in left
    finally:
        for container in (never_started, exited, running):
            try:
                docker_client.api.remove_container(container, force=True)
            except Exception:  # noqa: BLE001 - swept already
                pass
