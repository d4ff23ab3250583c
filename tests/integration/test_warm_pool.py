"""The warm pool (worker/warm/pool.py) against the real Docker engine: containers started
ahead of demand, hardened like cold ones, each used for exactly one run; refilled in the
background; an empty pool means a cold start (counted); leftovers removed on start."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from prometheus_client import REGISTRY

from tests.integration.helpers import container_gone
from worker.images import engine_image_tag
from worker.network.link import host_end
from worker.preparation import remove_leftovers
from worker.run_executor import engine_job
from worker.sandbox.container_owner import owner_labels
from worker.sandbox.sandbox import Sandbox, SandboxLimits
from worker.warm.pool import ContainerReaper, WarmPool

HELLO = engine_job("def Run(engine):\n    engine.result.set('hi')\n")


def wait_for(predicate: Callable[[], bool], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def starts(kind: str) -> float:
    return REGISTRY.get_sample_value("codeactions_sandbox_starts_total", {"kind": kind}) or 0


class PoolUnderTest:
    def __init__(self, platform, size: int, max_age: float = 240) -> None:  # noqa: ANN001
        self.settings = platform.settings()
        self.client = docker.from_env()
        self.name = f"test-pool-{uuid.uuid4().hex[:8]}"
        self.reaper = ContainerReaper(self.client.api)
        self.sandbox = Sandbox(self.client, self.settings, reaper=self.reaper)
        self.pool = WarmPool(self.sandbox, self.name, size, max_age)
        self.sandbox.pool = self.pool
        self.image = engine_image_tag("python")
        self.limits = SandboxLimits.for_code(self.settings, 10, network=True)

    def containers(self) -> list[str]:
        # The low-level list: the high-level one inspects each, racing with removals.
        found = self.client.api.containers(
            all=True, filters={"label": f"codeactions.worker={self.name}"})
        return sorted(c["Id"] for c in found)

    def run(self, limits: SandboxLimits | None = None):  # noqa: ANN201
        return self.sandbox.run(self.image, dict(HELLO), limits or self.limits,
                                {"codeactions.worker": self.name})

    def close(self) -> None:
        self.pool.close()
        self.reaper.close()
        for container_id in self.containers():
            self.client.api.remove_container(container_id, force=True)
        self.client.close()


@pytest.fixture()
def make_pool(platform) -> Iterator[Callable[..., PoolUnderTest]]:  # noqa: ANN001
    made: list[PoolUnderTest] = []

    def _make(size: int, max_age: float = 240) -> PoolUnderTest:
        made.append(PoolUnderTest(platform, size, max_age))
        return made[-1]

    yield _make
    for pool in made:
        pool.close()


def test_a_pool_container_serves_exactly_one_run_and_the_pool_refills(make_pool):
    under = make_pool(size=2)
    under.pool.start([(under.image, under.limits)])
    assert wait_for(lambda: under.pool.ready_count(under.image, under.limits) == 2)
    ready = under.containers()
    warm_before = starts("warm")
    used = []
    for _ in range(4):
        outcome = under.run()
        assert outcome.status == "completed" and outcome.result == "hi"
        used.append(outcome.container_id)
        assert wait_for(lambda: under.pool.ready_count(under.image, under.limits) == 2)
    assert len(set(used)) == 4  # never the same container twice
    assert any(ready_id.startswith(used[0]) for ready_id in ready)  # taken, not started
    assert starts("warm") == warm_before + 4
    assert all(container_gone(container_id) for container_id in used)  # destroyed after use


def test_refills_wait_for_a_moment_without_runs_unless_the_pool_is_empty(make_pool):
    """Starting a container costs Docker ~0.2 CPU-second: while one is still ready, the
    refill waits until no run is in flight (up to its patience, long here)."""
    under = make_pool(size=2)
    under.sandbox.activity.patience = 120
    under.pool.start([(under.image, under.limits)])
    assert wait_for(lambda: under.pool.ready_count(under.image, under.limits) == 2)
    before = under.containers()
    with under.sandbox.activity.running():
        taken = under.pool.take(under.image, under.limits)
        time.sleep(2)  # a refill that did not wait would have created its container by now
        assert under.containers() == before and under.pool.ready_count(
            under.image, under.limits) == 1
    assert wait_for(lambda: under.pool.ready_count(under.image, under.limits) == 2)
    taken.attached.hang_up()
    under.sandbox.remove(taken.id)
    # An empty pool is refilled at once, runs in flight or not.
    with under.sandbox.activity.running():
        for _ in range(2):
            container = under.pool.take(under.image, under.limits)
            container.attached.hang_up()
            under.sandbox.remove(container.id)
        assert wait_for(lambda: under.pool.ready_count(under.image, under.limits) >= 1)


def test_an_empty_pool_falls_back_to_a_cold_start_and_counts_it(make_pool):
    under = make_pool(size=0)
    under.pool.start([(under.image, under.limits)])
    cold_before = starts("cold")
    outcome = under.run()
    assert outcome.status == "completed" and outcome.result == "hi"
    assert starts("cold") == cold_before + 1
    assert container_gone(outcome.container_id)


def test_dead_pool_containers_are_never_handed_out(make_pool):
    under = make_pool(size=2)
    under.pool.start([(under.image, under.limits)])
    assert wait_for(lambda: under.pool.ready_count(under.image, under.limits) == 2)
    doomed = under.containers()
    for container_id in doomed:
        under.client.api.kill(container_id)
        under.client.api.wait(container_id, timeout=10)
    outcome = under.run()
    assert outcome.status == "completed" and outcome.result == "hi"
    assert not any(container_id.startswith(outcome.container_id) for container_id in doomed)


def test_pool_containers_are_hardened_exactly_like_cold_ones(make_pool):
    under = make_pool(size=1)
    under.pool.start([(under.image, under.limits)])
    assert wait_for(lambda: under.pool.ready_count(under.image, under.limits) == 1)
    pooled = under.client.api.inspect_container(under.containers()[0])
    cold_id = under.sandbox.create(under.image, under.limits, {"codeactions.worker": under.name})
    cold = under.client.api.inspect_container(cold_id)
    for field in ("ReadonlyRootfs", "CapDrop", "SecurityOpt", "PidsLimit", "Memory",
                  "MemorySwap", "Tmpfs", "Ulimits", "Init", "NetworkMode", "IpcMode",
                  "LogConfig"):
        assert pooled["HostConfig"][field] == cold["HostConfig"][field], field
    assert pooled["HostConfig"]["ReadonlyRootfs"] is True
    assert pooled["HostConfig"]["CapDrop"] == ["ALL"]
    # Each container a uid of its own (worker/sandbox/uids.py), from the same range.
    assert pooled["Config"]["User"] in under.sandbox.uids
    assert cold["Config"]["User"] in under.sandbox.uids
    assert pooled["Config"]["User"] != cold["Config"]["User"]
    assert pooled["Config"]["Env"] == cold["Config"]["Env"]
    assert pooled["Config"]["Labels"]["codeactions.kind"] == "pool"


def test_codes_without_network_get_containers_without_network(make_pool):
    under = make_pool(size=1)
    under.pool.start([(under.image, under.limits)])
    offline = SandboxLimits.for_code(under.settings, 10, network=False)
    first = under.run(offline)  # the first demand starts a cold one, then it is kept filled
    assert first.status == "completed"
    assert container_gone(first.container_id)
    assert wait_for(lambda: under.pool.ready_count(under.image, offline) == 1)
    linked = {c: Path("/sys/class/net", host_end(c)).exists()
              for c in under.containers()}
    assert sorted(linked.values()) == [False, True]  # one of each, ready
    taken = under.pool.take(under.image, offline)
    assert linked[taken.id] is False
    taken.attached.hang_up()
    under.sandbox.remove(taken.id)


def test_old_pool_containers_are_replaced(make_pool):
    under = make_pool(size=1, max_age=1.5)
    under.pool.start([(under.image, under.limits)])
    assert wait_for(lambda: under.pool.ready_count(under.image, under.limits) == 1)
    first = under.containers()
    assert wait_for(lambda: under.containers() and under.containers() != first, seconds=20)
    assert all(container_gone(container_id) for container_id in first)


def test_closing_the_pool_removes_its_containers(make_pool):
    under = make_pool(size=2)
    under.pool.start([(under.image, under.limits)])
    assert wait_for(lambda: len(under.containers()) == 2)
    under.pool.close()
    assert wait_for(lambda: under.containers() == [], seconds=20)


def test_a_restarted_worker_removes_its_predecessors_leftovers_and_nothing_live(make_pool):
    under = make_pool(size=0)
    create = under.sandbox.create
    image, limits = under.image, under.limits
    other = f"other-{uuid.uuid4().hex[:8]}"
    # A pid above the kernel's maximum: certainly not running.
    dead_owner = {"codeactions.kind": "warm",
                  "codeactions.owner": f"{socket.gethostname()}:{2**22 + 7}:12345"}
    containers = {
        # the predecessor (same worker name), even though "its" owner looks alive
        "predecessor": create(image, limits, {"codeactions.worker": under.name,
                                              **owner_labels("pool")}),
        # another platform's live pool and warm environment
        "live_pool": create(image, limits, {"codeactions.worker": other, **owner_labels("pool")}),
        "live_warm": create(image, limits, {"codeactions.worker": other, **owner_labels("warm")}),
        # a warm environment whose owner process is gone
        "orphan_warm": create(image, limits, {"codeactions.worker": other, **dead_owner}),
        # owned on another host: never judged from here
        "remote_pool": create(image, limits, {"codeactions.worker": other,
                                              "codeactions.kind": "pool",
                                              "codeactions.owner": "elsewhere:1:1"}),
        # another platform's one-shot container, young: its run may still be going
        "young_run": create(image, limits, {"codeactions.worker": other}),
    }
    try:
        remove_leftovers(under.client, under.name)

        def exists(container_id: str) -> bool:
            try:
                under.client.api.inspect_container(container_id)
                return True
            except docker.errors.NotFound:
                return False

        gone = {name for name, container_id in containers.items() if not exists(container_id)}
        assert gone == {"predecessor", "orphan_warm"}
    finally:
        for container_id in containers.values():
            under.sandbox.remove(container_id)
