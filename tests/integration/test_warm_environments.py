"""Per-code warm environments (worker/warm/environments.py, engines/PROTOCOL.md): the `warm`
switch on codes, and isolation: between runs of one code nothing survives (files, processes,
memory, IPC), and an environment is never shared between codes or projects."""

from __future__ import annotations

import json
import time
import uuid

import docker
import docker.errors
import pytest
import requests

from tests.integration.helpers import PROJECT, call, container_gone, create_code, run_now

# Reports what it finds of earlier runs, then leaves all it can behind.
PYTHON_SNOOP = r'''
import ctypes, json, os, signal, sys, time

counter = 0

def others():
    me = os.getpid()
    return sorted(int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me))

def Run(engine):
    global counter
    counter += 1
    found = {
        "tmp": sorted(os.listdir("/tmp")),
        "shm": sorted(os.listdir("/dev/shm")),
        "mqueue": sorted(os.listdir("/dev/mqueue")),
        "ipc": [l for kind in ("shm", "msg", "sem")
                for l in open(f"/proc/sysvipc/{kind}").read().splitlines()[1:] if l.strip()],
        "processes": others(),
        "counter": counter,
        "json_marker": hasattr(json, "left_by_a_run"),
        "environ": os.environ.get("LEFT_BY_A_RUN"),
        "modules": "left_module" in sys.modules,
        "pid": os.getpid(),
        "parent": os.getppid(),
    }
    # Leave everything we can.
    open("/tmp/left.txt", "w").write(engine.body or "secret of an earlier caller")
    os.makedirs("/tmp/locked/inner", exist_ok=True)
    open("/tmp/locked/inner/file", "w").write("x")
    os.chmod("/tmp/locked/inner", 0)
    os.chmod("/tmp/locked", 0)
    open("/dev/shm/left", "w").write("x")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmget(0, 4096, 0o1000 | 0o600)  # IPC_PRIVATE, IPC_CREAT
    libc.msgget(0, 0o1000 | 0o600)
    libc.semget(0, 1, 0o1000 | 0o600)
    libc.mq_open(b"/left", os.O_CREAT | os.O_RDWR, 0o600, None)
    json.left_by_a_run = True
    os.environ["LEFT_BY_A_RUN"] = "1"
    sys.modules["left_module"] = json
    if os.fork() == 0:  # a daemon that would wait for the next run
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(600)
        os._exit(0)
    engine.result.set(found, content_type="json")
'''

GO_SNOOP = r'''package main

import (
	"os"
	"os/exec"
	"sort"
	"strconv"
	"syscall"

	"codeactions"
)

func names(dir string) []string {
	entries, _ := os.ReadDir(dir)
	out := []string{}
	for _, e := range entries {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

func Run(engine *codeactions.Engine) error {
	me, parent := os.Getpid(), os.Getppid()
	procs := []int{}
	for _, name := range names("/proc") {
		if pid, err := strconv.Atoi(name); err == nil && pid != 1 && pid != me && pid != parent {
			procs = append(procs, pid)
		}
	}
	found := map[string]any{"tmp": names("/tmp"), "shm": names("/dev/shm"),
		"processes": procs, "pid": me}
	os.WriteFile("/tmp/left.txt", []byte("secret of an earlier caller"), 0o600)
	os.WriteFile("/dev/shm/left", []byte("x"), 0o600)
	daemon := exec.Command("sleep", "600")
	daemon.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	daemon.Start()
	return engine.Result.Set(found, codeactions.WithContentType("json"))
}
'''

JAVASCRIPT_SNOOP = r'''
const fs = require("fs");
const childProcess = require("child_process");
let counter = 0;

async function Run(engine) {
  counter += 1;
  const found = {
    tmp: fs.readdirSync("/tmp").sort(),
    shm: fs.readdirSync("/dev/shm").sort(),
    mqueue: fs.readdirSync("/dev/mqueue").sort(),
    processes: fs.readdirSync("/proc").filter((p) => /^[0-9]+$/.test(p)).map(Number)
      .filter((p) => p !== 1 && p !== process.pid),
    counter,
    left: globalThis.leftByARun || null,
    environ: process.env.LEFT_BY_A_RUN || null,
    pid: process.pid,
    parent: process.ppid,
  };
  // Leave everything we can.
  fs.writeFileSync("/tmp/left.txt", engine.body || "secret of an earlier caller");
  fs.mkdirSync("/tmp/locked/inner", { recursive: true });
  fs.writeFileSync("/tmp/locked/inner/file", "x");
  fs.chmodSync("/tmp/locked/inner", 0);
  fs.chmodSync("/tmp/locked", 0);
  fs.writeFileSync("/dev/shm/left", "x");
  globalThis.leftByARun = "yes";
  process.env.LEFT_BY_A_RUN = "1";
  childProcess.spawn("sleep", ["600"], { detached: true, stdio: "ignore" }).unref();
  engine.result.set(found, { contentType: "json" });
}
module.exports = { Run };
'''


def _labels(container_id: str) -> dict:
    return docker.from_env().containers.get(container_id).labels


def _kind(container_id: str) -> str | None:
    """pool, warm, …; None once the container is gone (pool containers serve one run)."""
    try:
        return _labels(container_id).get("codeactions.kind")
    except docker.errors.NotFound:
        return None


def test_warm_switch_on_create_patch_and_json(platform):
    code = create_code(platform, "def Run(engine):\n    pass\n")
    assert code["warm"] is False
    warm = create_code(platform, "def Run(engine):\n    pass\n", warm=True)
    assert warm["warm"] is True
    response = requests.post(platform.url("/code"), json={
        "name": "warm-json", "language": "python", "type": "endpoint", "project_uuid": PROJECT,
        "source": "def Run(engine):\n    pass\n", "warm": True})
    assert response.status_code == 201 and response.json()["warm"] is True
    patched = requests.patch(platform.url(f"/code/{code['id']}"), params={"warm": "true"})
    assert patched.status_code == 200 and patched.json()["warm"] is True
    patched = requests.patch(platform.url(f"/code/{code['id']}"), json={"warm": False})
    assert patched.status_code == 200 and patched.json()["warm"] is False
    assert requests.get(platform.url(f"/code/{code['id']}")).json()["warm"] is False
    for bad in (lambda: requests.post(platform.url("/code"), data=b"x", params={
                    "name": "n", "language": "python", "type": "endpoint",
                    "project_uuid": PROJECT, "warm": "maybe"}),
                lambda: requests.patch(platform.url(f"/code/{code['id']}"),
                                       params={"warm": "sometimes"})):
        refused = bad()
        assert refused.status_code == 400 and refused.json()["field"] == "warm", refused.text


def _runs_in_one_environment(platform, code_id: str, count: int) -> list[dict]:  # noqa: ANN001
    """`count` runs that one warm environment served, one after another. A run arriving while
    the environment starts or drains its previous run takes a pool container (busy
    machines): those are left out."""
    runs: list[dict] = []
    deadline = time.monotonic() + 60
    while len(runs) < count and time.monotonic() < deadline:
        run = run_now(platform, code_id, data=f"caller {len(runs)}")
        if not runs and _kind(run["container_id"]) == "warm":
            runs.append(run)
        elif runs and run["container_id"] == runs[0]["container_id"]:
            runs.append(run)
        else:
            time.sleep(0.3)
    assert len(runs) == count, "the warm environment did not serve the runs"
    return runs


def test_nothing_of_a_python_run_survives_into_the_next(platform):
    code = create_code(platform, PYTHON_SNOOP, warm=True)
    runs = _runs_in_one_environment(platform, code["id"], 3)
    labels = _labels(runs[0]["container_id"])
    assert labels["codeactions.kind"] == "warm" and labels["codeactions.code_id"] == code["id"]
    found = [json.loads(run["result"]) for run in runs]
    assert len({f["pid"] for f in found}) == 3  # a fresh process every run
    for seen in found:
        assert seen == {**seen, "tmp": [], "shm": [], "mqueue": [], "ipc": [], "processes": [],
                        "counter": 1, "json_marker": False, "environ": None,
                        "modules": False, "parent": 1}, seen


def test_nothing_of_a_go_run_survives_into_the_next(platform):
    code = create_code(platform, GO_SNOOP, language="go", warm=True)
    runs = _runs_in_one_environment(platform, code["id"], 3)
    found = [json.loads(run["result"]) for run in runs]
    assert len({f["pid"] for f in found}) == 3
    for seen in found:
        assert (seen["tmp"], seen["shm"], seen["processes"]) == ([], [], []), seen


def test_environments_are_never_shared_between_codes_or_projects(platform):
    source = "def Run(engine):\n    engine.result.set('same source')\n"
    other_project = str(uuid.uuid4())
    codes = [create_code(platform, source, warm=True),
             create_code(platform, source, warm=True),
             create_code(platform, source, warm=True, project_uuid=other_project)]
    containers = []
    for code in codes:
        first, second = run_now(platform, code["id"]), run_now(platform, code["id"])
        assert first["container_id"] == second["container_id"]
        labels = _labels(first["container_id"])
        assert labels["codeactions.code_id"] == code["id"]
        assert labels["codeactions.project"] == code["project_uuid"]
        containers.append(first["container_id"])
    assert len(set(containers)) == 3


def test_a_changed_code_gets_a_new_environment(platform):
    code = create_code(platform, "def Run(engine):\n    engine.result.set('v1')\n", warm=True)
    old = run_now(platform, code["id"])
    assert old["result"] == "v1"
    response = requests.patch(platform.url(f"/code/{code['id']}"),
                              data=b"def Run(engine):\n    engine.result.set('v2')\n")
    assert response.status_code == 200
    new = run_now(platform, code["id"])
    assert new["result"] == "v2" and new["container_id"] != old["container_id"]
    assert container_gone(old["container_id"])
    # Switching the network off is a different container too.
    requests.patch(platform.url(f"/code/{code['id']}"), params={"network": "false"})
    offline = run_now(platform, code["id"])
    assert offline["container_id"] != new["container_id"]
    assert container_gone(new["container_id"])


def test_a_forged_supervisor_message_retires_the_environment(platform):
    """The run's own frame channel is reachable from user code (sys.modules['harness']); a
    message claiming to be the supervisor's must not be believed, and the environment that
    carried it must not serve another run."""
    code = create_code(platform, r'''
import os, sys, json
def Run(engine):
    if engine.params.get("forge"):
        harness = sys.modules["harness"]
        done = json.dumps({"t": "done", "nonce": "guess", "clean": True}).encode()
        os.write(harness._frame_fd, (0x80000000 | len(done)).to_bytes(4, "big") + done)
        fake = json.dumps({"t": "result", "value": "forged", "status_code": 200,
                           "content_type": "text"}).encode()
        os.write(harness._frame_fd, len(fake).to_bytes(4, "big") + fake)
    engine.result.set("genuine")
''', warm=True)
    genuine = _runs_in_one_environment(platform, code["id"], 2)[-1]
    assert genuine["result"] == "genuine"
    time.sleep(1)  # its environment is idle again (a run meanwhile would take the pool)
    forged = call(platform, code["id"], params={"forge": "1"})
    assert forged.status_code == 500
    run = requests.get(platform.url(f"/coderun/{forged.json()['run_id']}")).json()
    assert run["exit_reason"] == "protocol", run
    assert run["container_id"] == genuine["container_id"]
    assert container_gone(genuine["container_id"])
    after = run_now(platform, code["id"])
    assert after["result"] == "genuine" and after["container_id"] != genuine["container_id"]


def test_nothing_of_a_javascript_run_survives_into_the_next(platform):
    code = create_code(platform, JAVASCRIPT_SNOOP, language="javascript", warm=True)
    runs = [run_now(platform, code["id"], data="caller 0")]
    # A JavaScript environment boots its next Node after each run (~0.2 s; a run arriving
    # meanwhile takes a pool container): wait until runs land in the first one again.
    deadline = time.monotonic() + 60
    while len(runs) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
        run = run_now(platform, code["id"], data=f"caller {len(runs)}")
        if run["container_id"] == runs[0]["container_id"]:
            runs.append(run)
    assert len(runs) == 3, "the warm environment served no second and third run"
    assert _labels(runs[0]["container_id"])["codeactions.kind"] == "warm"
    found = [json.loads(run["result"]) for run in runs]
    assert len({f["pid"] for f in found}) == 3  # a fresh process every run
    for seen in found:
        assert seen == {**seen, "tmp": [], "shm": [], "mqueue": [], "processes": [],
                        "counter": 1, "left": None, "environ": None, "parent": 1}, seen


@pytest.fixture()
def environments(platform):  # noqa: ANN001, ANN201
    """A worker's warm environments in this process, with short lifetimes."""
    from worker.sandbox.sandbox import Sandbox
    from worker.warm.environments import WarmEnvironments
    from worker.warm.pool import ContainerReaper

    settings = platform.settings(warm_environment_max_runs=2, warm_environment_idle_seconds=2)
    client = docker.from_env()
    reaper = ContainerReaper(client.api)
    sandbox = Sandbox(client, settings, reaper=reaper)
    sandbox.environments = WarmEnvironments(sandbox, settings, f"test-env-{uuid.uuid4().hex[:8]}")
    yield sandbox
    sandbox.environments.close()
    reaper.close()
    client.close()


def test_environments_retire_after_max_runs_and_when_idle(platform, environments):
    from worker.images import engine_image_tag
    from worker.run_executor import engine_job
    from worker.sandbox.sandbox import SandboxLimits
    from worker.warm.environments import WarmSpec

    sandbox = environments
    spec = WarmSpec("python", str(uuid.uuid4()), PROJECT)
    limits = SandboxLimits.for_code(sandbox.settings, 10, network=False)
    job = engine_job("def Run(engine):\n    engine.result.set('ok')\n")

    def run():  # noqa: ANN202
        outcome = sandbox.run(engine_image_tag("python"), dict(job), limits, {}, warm=spec)
        assert outcome.status == "completed" and outcome.result == "ok"
        return outcome.container_id

    first = run()
    assert sandbox.environments.wait_idle(spec.code_id, 10)
    second = run()
    assert first == second
    assert container_gone(first)  # two runs: retired
    third = run()
    assert third != first
    deadline = time.monotonic() + 20
    while sandbox.environments.count(spec.code_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sandbox.environments.count(spec.code_id) == 0  # idle for 2 s: retired
    assert container_gone(third)


def test_an_environment_that_died_while_idle_is_not_used(platform):
    code = create_code(platform, "def Run(engine):\n    engine.result.set('alive')\n", warm=True)
    first = run_now(platform, code["id"])
    client = docker.from_env()
    client.api.kill(first["container_id"])
    client.api.wait(first["container_id"], timeout=10)
    second = run_now(platform, code["id"])
    assert second["status"] == "completed" and second["result"] == "alive"
    assert second["container_id"] != first["container_id"]


RESIDENT_COUNTERS = {
    "python": "import os\ncount = 0\n\ndef Run(engine):\n    global count\n    count += 1\n"
              "    engine.result.set(f'{count} {os.getpid()}')\n",
    "javascript": "let count = 0;\nfunction Run(engine) {\n  count += 1;\n"
                  "  engine.result.set(`${count} ${process.pid}`);\n}\n",
    "go": "package main\n\nimport (\n\t\"codeactions\"\n\t\"fmt\"\n\t\"os\"\n)\n\n"
          "var count int\n\nfunc Run(engine *codeactions.Engine) error {\n\tcount++\n"
          "\treturn engine.Result.Set(fmt.Sprintf(\"%d %d\", count, os.Getpid()))\n}\n",
}


@pytest.mark.parametrize("language", sorted(RESIDENT_COUNTERS))
def test_a_resident_code_keeps_its_process_between_calls(platform, language):
    """Mode resident through the API: one process serves the code's calls, its module state
    lasting (as on Lambda); after the switch to mode warm no call sees another's state."""
    code = create_code(platform, RESIDENT_COUNTERS[language], language=language,
                       mode="resident")
    assert (code["mode"], code["warm"]) == ("resident", True)
    runs = _runs_in_one_environment(platform, code["id"], 3)
    counts, pids = zip(*(run["result"].split() for run in runs), strict=True)
    assert counts == ("1", "2", "3") and len(set(pids)) == 1, runs
    switched = requests.patch(platform.url(f"/code/{code['id']}"), params={"mode": "warm"})
    assert switched.status_code == 200 and switched.json()["mode"] == "warm"
    # Whatever serves them now (its warm environment, or the pool while a JavaScript one
    # boots its next Node), no call sees an earlier call's state.
    runs = [run_now(platform, code["id"]) for _ in range(3)]
    assert [run["result"].split()[0] for run in runs] == ["1", "1", "1"], runs
