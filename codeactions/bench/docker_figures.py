"""What the bench measures on the Docker engine itself: the cold `docker run` baseline, the
machine's container churn ceiling, memory of containers and workers, and which runs started
their own container (a cold start) while the platform was under load."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from codeactions.bench.load import percentile
from shared.settings import Settings
from worker.sandbox.container_owner import KIND_LABEL


def hello_job(language: str, source: str, client: Any, settings: Settings,
              cache_dir: Path) -> dict[str, Any]:
    """The job a worker would send for `source` (Go: compiled once, as the worker does)."""
    from worker.run_executor import engine_job

    job = engine_job(source)
    if language == "go":
        from worker.preparers.go_build import GoBuilder

        job.update(GoBuilder(client, settings, cache_dir).job_fields(source))
    return job


def docker_run_baseline(image: str, job: dict[str, Any], client: Any, settings: Settings,
                        count: int = 10, network: bool = True) -> dict[str, Any]:
    """Wall time of `docker run -i --rm`, hardened exactly like a sandbox
    (worker.sandbox.sandbox.Sandbox.policy), answering the job: with Docker's own default network
    (what a plain cold `docker run` gets; the worker plugs its sandboxes in itself), or none."""
    from worker.sandbox.hardening import image_entrypoint
    from worker.sandbox.sandbox import Sandbox, SandboxLimits

    policy = Sandbox(client, settings).policy(SandboxLimits.for_code(settings, 60, network=False))
    flags = policy.run_flags()
    init_args = policy.init_args(list(image_entrypoint(client.api, image)))
    mode = "bridge" if network else "none"
    flags[flags.index("--network") + 1] = mode
    payload = json.dumps(job).encode()
    times = []
    for index in range(count + 1):
        started = time.perf_counter()
        proc = subprocess.run(["docker", "run", "-i", "--rm", *flags, image, *init_args],
                              input=payload, capture_output=True, timeout=120)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0 or b'"end"' not in proc.stdout:
            raise RuntimeError(f"docker run of {image} failed: {proc.stderr[-500:]!r}")
        if index:  # the first one pays for cold caches
            times.append(elapsed * 1000)
    return {"runs": count, "network": mode,
            "p50_ms": round(percentile(times, 0.5), 1), "p99_ms": round(percentile(times, 0.99), 1)}


def churn_ceiling(client: Any, settings: Settings, image: str, job: dict[str, Any],
                  threads: int = 4, seconds: float = 12, network: bool = True) -> dict[str, Any]:
    """How many one-run containers a second this machine creates, runs and removes, the way
    the worker's cold path does (hardened container, job over attach, forced removal), on the
    sandbox network (the default for codes) or without network."""
    from worker.sandbox.sandbox import Sandbox, SandboxLimits

    sandbox = Sandbox(client, settings)
    limits = SandboxLimits.for_code(settings, 30, network=network)
    stop_at = time.monotonic() + seconds
    done, failed = [0], [0]
    lock = threading.Lock()

    def _loop() -> None:
        while time.monotonic() < stop_at:
            outcome = sandbox.run(image, dict(job), limits, {"codeactions.worker": "bench-churn"})
            with lock:
                (done if outcome.status == "completed" else failed)[0] += 1

    started = time.monotonic()
    workers = [threading.Thread(target=_loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - started
    return {"threads": threads, "seconds": round(elapsed, 1), "containers": done[0],
            "failed": failed[0], "per_second": round(done[0] / elapsed, 2), "network": network}


def hardening_cost(client: Any, settings: Settings, image: str, job: dict[str, Any],
                   threads: int = 4, seconds: float = 12) -> dict[str, Any]:
    """What issue 16's hardening costs a one-run container (a uid of its own, our seccomp
    profile, the TCP sysctls, our undumpable init, a masked /proc/cmdline): the churn loop
    without network, each thread alternating run by run between the worker's container and
    the container as it was before (nobody, Docker's default profile and init, no sysctls,
    Docker's masked paths), so that the machine's load touches both alike. `ratio`: mean time
    per run, hardened over plain (the churn ceiling's cost, inverted)."""
    from worker.sandbox.hardening import SANDBOX_USER, ContainerPolicy
    from worker.sandbox.sandbox import Sandbox, SandboxLimits

    class PlainSandbox(Sandbox):
        def policy(self, limits: SandboxLimits, init: bool = True,
                   user: str | None = None) -> ContainerPolicy:
            return super().policy(limits, init=False, user=SANDBOX_USER)

        def host_config(self, limits: SandboxLimits, policy: ContainerPolicy) -> dict[str, Any]:
            config = super().host_config(limits, policy)
            config.update(SecurityOpt=["no-new-privileges"], Init=True)
            config.pop("Sysctls", None)
            config.pop("MaskedPaths", None)
            return config

    variants = {"hardened": Sandbox(client, settings), "plain": PlainSandbox(client, settings)}
    limits = SandboxLimits.for_code(settings, 30, network=False)
    times: dict[str, list[float]] = {label: [] for label in variants}
    failed = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def _loop(offset: int) -> None:
        turn = offset
        while time.monotonic() < stop_at:
            label = ("hardened", "plain")[turn % 2]
            turn += 1
            started = time.perf_counter()
            outcome = variants[label].run(image, dict(job), limits,
                                          {"codeactions.worker": "bench-hardening"})
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                if outcome.status == "completed":
                    times[label].append(elapsed)
                else:
                    failed[0] += 1

    workers = [threading.Thread(target=_loop, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    figures: dict[str, Any] = {"threads": threads, "failed": failed[0]}
    for label, values in times.items():
        figures[label] = {"runs": len(values), "p50_ms": round(percentile(values, 0.5), 1),
                          "mean_ms": round(sum(values) / max(1, len(values)), 1)}
    figures["ratio"] = round(figures["hardened"]["mean_ms"]
                             / max(0.1, figures["plain"]["mean_ms"]), 3)
    return figures


class ColdStartCounter:
    """Counts containers created for one code's runs (cold starts: pool containers are
    created before any code is known and carry no code id) while it runs."""

    def __init__(self, client: Any, code_id: str) -> None:
        self.count = 0
        self._stream = client.events(decode=True, filters={
            "type": "container", "event": "create", "label": f"codeactions.code_id={code_id}"})
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self._stream:
                labels = (event.get("Actor") or {}).get("Attributes") or {}
                if KIND_LABEL not in labels:  # not a warm environment
                    self.count += 1
        except Exception:  # closed
            pass

    def stop(self) -> int:
        time.sleep(0.5)  # events of the last runs
        self._stream.close()
        return self.count


def container_memory_mib(client: Any, container_id: str) -> float | None:
    """Memory the container's cgroup charges, less reclaimable file cache."""
    try:
        stats = client.api.stats(container_id, stream=False)["memory_stats"]
    except Exception:
        return None
    usage = stats.get("usage")
    if usage is None:
        return None
    detail = stats.get("stats", {})
    cache = detail.get("total_inactive_file", detail.get("inactive_file", 0))
    return round((usage - cache) / 2**20, 1)


def pool_container(client: Any, image: str) -> str | None:
    for container in client.api.containers(filters={"label": f"{KIND_LABEL}=pool"}):
        if container.get("Image") == image:
            return container["Id"]
    return None


def warm_container(client: Any, code_id: str) -> str | None:
    warm = client.api.containers(
        filters={"label": [f"codeactions.code_id={code_id}", f"{KIND_LABEL}=warm"]})
    return warm[0]["Id"] if warm else None


def process_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


# Starts the engine's own command `count` times inside one container and prints the wall
# times (ms): the run's process from exec to its answer, without Docker's share.
_ENGINE_STARTS = """
import json, subprocess, sys, time
command, job, count = json.loads(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3])
times = []
for index in range(count + 1):
    started = time.perf_counter()
    proc = subprocess.run(command, input=job, capture_output=True)
    if proc.returncode != 0 or b'"end"' not in proc.stdout:
        sys.exit(proc.stderr[-500:].decode(errors="replace"))
    if index:
        times.append((time.perf_counter() - started) * 1000)
print(json.dumps(times))
"""


def python_packages_cost(image: str, job: dict[str, Any], client: Any, settings: Settings,
                         count: int = 40, rounds: int = 4) -> dict[str, Any]:
    """What the old runtime's packages (issue 13) cost a hello-world Python run: the engine's
    process from start to answer, p50 with the packages installed and with their folder
    hidden under an empty tmpfs (the image as it would be without them), in the same run,
    side by side so that the machine's load touches both alike."""
    from worker.sandbox.sandbox import Sandbox, SandboxLimits

    # No init: the timing process replaces the entrypoint and starts the engine itself.
    flags = Sandbox(client, settings).policy(
        SandboxLimits.for_code(settings, 60, network=False), init=False).run_flags()
    command = client.api.inspect_image(image)["Config"]["Entrypoint"]
    site = subprocess.run(  # where pip put them (Debian: /usr/local/lib/python3.X/dist-packages)
        ["docker", "run", "--rm", *flags, "--entrypoint", "python3", image, "-c",
         "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, timeout=120, check=True).stdout.strip()
    variants = {"with_packages": [],
                "without_packages": ["--mount", f"type=tmpfs,destination={site}"]}
    times: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(rounds):
        # Both variants at once: whatever else the machine does slows both alike.
        procs = {label: subprocess.Popen(
            ["docker", "run", "--rm", *flags, *extra, "--entrypoint", "python3", image,
             "-c", _ENGINE_STARTS, json.dumps(command), json.dumps(job),
             str(max(1, count // rounds))],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for label, extra in variants.items()}
        for label, proc in procs.items():
            out, err = proc.communicate(timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"engine starts in {image} failed: {err[-500:]!r}")
            times[label] += json.loads(out)
    figures: dict[str, Any] = {"runs": count, "site_packages": site}
    for label, values in times.items():
        figures[label] = {"p50_ms": round(percentile(values, 0.5), 1),
                          "p99_ms": round(percentile(values, 0.99), 1)}
    figures["ratio"] = round(figures["with_packages"]["p50_ms"]
                             / figures["without_packages"]["p50_ms"], 3)
    return figures
