"""The attack suite's leftovers check (`no_run_leftovers`) can fail: a process named like
one waiting for a run but spinning is a leftover; the same one asleep is not."""

from __future__ import annotations

import docker
import pytest

from tests.integration.helpers import no_run_leftovers
from worker.images import engine_image_tag


@pytest.mark.parametrize(("program", "left_over"), [
    ("import time; time.sleep(120)", False),
    ("while True: pass", True),
])
def test_a_spinning_process_is_a_leftover(platform, program: str, left_over: bool):  # noqa: ARG001
    client = docker.from_env()
    # Named as Python's kept process is (its last argument `serve`), in a warm container.
    container = client.containers.run(
        engine_image_tag("python"), ["python3", "-c", program, "serve"], detach=True,
        labels={"codeactions.kind": "warm"}, network_mode="none", user="65534",
    )
    try:
        assert no_run_leftovers(container.id, seconds=4, resident=True) is not left_over
    finally:
        container.remove(force=True)
        client.close()
