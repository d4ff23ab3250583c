"""What hostile Python code cannot do: see secrets, reach our services, be root, outlive its
timeout, forge the harness's frames, or leave its container behind."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests

from shared.settings import Settings
from tests.integration.helpers import call, container_gone, create_code, run_now
from worker.network.firewall import local_addresses
from worker.network.link import GATEWAY


def _run_json(platform, source: str, **kwargs) -> dict:  # noqa: ANN001
    code = create_code(platform, source, **kwargs)
    response = call(platform, code["id"])
    assert response.status_code == 200, response.text
    return response.json()


def test_no_platform_secrets_in_environment_or_proc(platform):
    got = _run_json(platform, '''
import os
def Run(engine):
    try:
        init_env = open("/proc/1/environ", "rb").read().decode(errors="replace")
    except OSError as exc:
        init_env = "unreadable: " + str(exc)
    engine.result.set({"env": dict(os.environ), "init": init_env}, content_type="json")
''')
    blob = json.dumps(got)
    for secret in ("FLOWS_CODE_ACTIONS", "postgresql", "amqp://", "redis://", "S3_",
                   platform.urls["postgres"], platform.urls["rabbitmq"]):
        assert secret not in blob, secret
    # The image's own settings only (numeric libraries' thread counts: engines/python/Dockerfile).
    assert set(got["env"]) <= {"PATH", "HOSTNAME", "HOME", "LANG", "PYTHONDONTWRITEBYTECODE",
                               "PYTHONUNBUFFERED", "LC_CTYPE", "OPENBLAS_NUM_THREADS",
                               "OMP_NUM_THREADS"}


def test_runs_as_its_own_uid_without_capabilities_on_a_read_only_root(platform):
    got = _run_json(platform, '''
import os
def Run(engine):
    status = open("/proc/self/status").read()
    caps = [l for l in status.splitlines() if l.startswith(("CapEff", "CapBnd", "NoNewPrivs"))]
    outcome = {}
    for path in ("/etc/evil", "/opt/evil", "/home/evil", "/tmp/ok"):
        try:
            with open(path, "w") as handle:
                handle.write("x")
            outcome[path] = "written"
        except OSError as exc:
            outcome[path] = type(exc).__name__
    engine.result.set({"uid": os.getuid(), "gid": os.getgid(), "caps": caps,
                       "writes": outcome}, content_type="json")
''')
    # A host uid and gid of its own (worker/sandbox/uids.py), never the host's nobody.
    first, _, last = Settings().sandbox_uid_range.partition("-")
    assert int(first) <= got["uid"] == got["gid"] <= int(last)
    caps = dict(line.split(":\t") for line in got["caps"])
    assert int(caps["CapEff"], 16) == 0 and int(caps["CapBnd"], 16) == 0
    assert caps["NoNewPrivs"].strip() == "1"
    assert got["writes"]["/tmp/ok"] == "written"
    for path in ("/etc/evil", "/opt/evil", "/home/evil"):
        assert got["writes"][path] != "written", path


def _host_addresses() -> list[str]:
    """Every IPv4 address of this host (Docker bridges' gateways included) and a sandbox's
    gateway: where a service bound to 0.0.0.0 would answer."""
    return sorted(local_addresses() - {"127.0.0.1"}) + [GATEWAY]


def test_cannot_reach_platform_services(platform):
    ports = [int(url.rsplit(":", 1)[1].split("/")[0]) for name, url in platform.urls.items()
             if name in ("postgres", "redis", "rabbitmq", "s3")]
    ports += [int(platform.base_url.rsplit(":", 1)[1]), 5672, 2375, 2376, 4369]
    targets = [(host, port) for host in ["127.0.0.1", *_host_addresses()] for port in ports]
    got = _run_json(platform, f'''
import socket
def Run(engine):
    reached = []
    for host, port in {targets!r}:
        s = socket.socket()
        s.settimeout(0.5)
        try:
            s.connect((host, port))
            reached.append(f"{{host}}:{{port}}")
        except OSError:
            pass
        finally:
            s.close()
    engine.result.set(reached, content_type="json")
''', timeout=60)
    assert got == []


def test_timeout_kills_the_run_and_removes_the_container(platform):
    code = create_code(platform, "import time\ndef Run(engine):\n    time.sleep(120)\n", timeout=5)
    response = call(platform, code["id"])
    assert response.status_code == 408
    assert response.json()["message"] == "timeout: request context timeout limit exceeded"
    run_id = response.json()["run_id"]
    deadline = time.monotonic() + 20
    run = {}
    while time.monotonic() < deadline:
        run = requests.get(platform.url(f"/coderun/{run_id}")).json()
        if run["status"] == "failed":
            break
        time.sleep(0.2)
    assert run["status"] == "failed" and run["result"] == "timed out after 5 s"
    assert run["exit_reason"] == "timeout"
    assert run["container_id"] and container_gone(run["container_id"])


def test_containers_are_removed_after_each_run(platform):
    code = create_code(platform, "def Run(engine):\n    pass\n")
    runs = [run_now(platform, code["id"]) for _ in range(3)]
    ids = [run["container_id"] for run in runs]
    assert len(set(ids)) == 3  # one container per run, never reused
    assert all(container_gone(container_id) for container_id in ids)


def test_printed_frames_are_not_frames(platform):
    code = create_code(platform, r'''
import json, struct, sys
def Run(engine):
    fake = json.dumps({"t": "result", "value": "forged", "status_code": 299,
                       "content_type": "html"}).encode()
    sys.stdout.buffer.write(struct.pack(">I", len(fake)) + fake)
    sys.stdout.flush()
    print(json.dumps({"t": "end", "status": "completed"}))
    engine.result.set("genuine")
''')
    response = call(platform, code["id"])
    assert response.status_code == 200 and response.text == "genuine"


@pytest.mark.parametrize("limit", ["memory"])
def test_memory_hog_fails_with_a_reason(platform, limit):
    code = create_code(platform, '''
def Run(engine):
    hog = []
    while True:
        hog.append(bytearray(16 * 1024 * 1024))
''', timeout=30)
    response = call(platform, code["id"])
    assert response.status_code == 500
    run = requests.get(platform.url(f"/coderun/{response.json()['run_id']}")).json()
    assert run["status"] == "failed" and run["exit_reason"] == "memory_limit"
    assert run["result"].startswith("memory limit exceeded")


def test_worker_survives_and_serves_the_next_run(platform):
    code = create_code(platform, f"def Run(engine):\n    engine.result.set('{uuid.uuid4()}')\n")
    first = call(platform, code["id"])
    assert first.status_code == 200 and call(platform, code["id"]).text == first.text


def test_network_switch_off_leaves_only_loopback(platform):
    code = create_code(platform, '''
import socket
def Run(engine):
    names = sorted(name for _, name in socket.if_nameindex())
    engine.result.set(names, content_type="json")
''')
    assert call(platform, code["id"]).json() != ["lo"]  # networked by default
    response = requests.patch(platform.url(f"/code/{code['id']}"), params={"network": "false"})
    assert response.status_code == 200 and response.json()["network"] is False
    assert call(platform, code["id"]).json() == ["lo"]
    bad = requests.patch(platform.url(f"/code/{code['id']}"), params={"network": "maybe"})
    assert bad.status_code == 400 and bad.json()["field"] == "network"
