"""Hostile code, one attack at a time: each ends `failed` (or contained) with a specific
reason, leaves nothing running, and the worker serves the next run as if nothing happened.

Sources are per language; a language joins a case by adding its source here.
"""

from __future__ import annotations

import subprocess
import time

import docker
import pytest
import requests

from tests.integration.helpers import call, create_code

ATTACKS: dict[str, dict] = {
    "busy_loop": {
        "timeout": 5,
        "expect": ("failed", "timed out after 5 s"),
        "python": "def Run(engine):\n    while True:\n        pass\n",
    },
    "sleep_past_timeout": {
        "timeout": 5,
        "expect": ("failed", "timed out after 5 s"),
        "python": "import time\ndef Run(engine):\n    time.sleep(60)\n",
    },
    "fork_bomb": {
        "timeout": 10,
        "expect": ("failed", None),
        "python": (
            "import os\n"
            "def Run(engine):\n"
            "    while True:\n"
            "        try:\n"
            "            os.fork()\n"
            "        except OSError:\n"
            "            pass\n"
        ),
    },
    "memory_hog": {
        "timeout": 30,
        "expect": ("failed", "memory limit exceeded (256 MiB)"),
        "python": (
            "def Run(engine):\n"
            "    hog = []\n"
            "    while True:\n"
            "        hog.append(bytearray(8 * 1024 * 1024))\n"
        ),
    },
    "disk_fill_tmp": {
        "timeout": 30,
        # The 16 MiB file-size limit or the 16 MiB tmpfs, whichever bites first.
        "expect": ("failed", ("No space left on device", "File too large")),
        "python": (
            "def Run(engine):\n"
            "    with open('/tmp/fill', 'wb') as f:\n"
            "        while True:\n"
            "            f.write(b'x' * 1024 * 1024)\n"
        ),
    },
    "write_outside_tmp": {
        "timeout": 10,
        "expect": ("failed", "Read-only file system"),
        "python": "def Run(engine):\n    open('/usr/evil', 'w').write('x')\n",
    },
    "stdout_flood": {
        "timeout": 30,
        "expect": ("failed", "output limit exceeded"),
        "python": (
            "import sys\n"
            "def Run(engine):\n"
            "    line = 'A' * 1023 + '\\n'\n"
            "    for _ in range(4 * 1024):\n"
            "        sys.stdout.write(line)\n"
            "        sys.stderr.write(line)\n"
        ),
    },
    "huge_result": {
        "timeout": 30,
        "expect": ("failed", "output limit exceeded (2 MiB)"),
        "python": "def Run(engine):\n    engine.result.set('x' * (3 * 1024 * 1024))\n",
    },
    "log_flood": {
        "timeout": 30,
        "expect": ("failed", "log limit exceeded (1000 logs per run)"),
        "python": "def Run(engine):\n    for i in range(5000):\n        engine.log.info(i)\n",
    },
    "close_std_streams": {
        "timeout": 10,
        "expect": ("completed", "still here"),
        "python": (
            "import os, sys\n"
            "def Run(engine):\n"
            "    sys.stdout.close()\n"
            "    for fd in (0, 1, 2):\n"
            "        os.close(fd)\n"
            "    engine.result.set('still here')\n"
        ),
    },
    "binary_output": {
        "timeout": 10,
        "expect": ("completed", "bin"),
        "python": (
            "import os\n"
            "def Run(engine):\n"
            "    os.write(1, b'\\xff\\xfe\\x00\\x80 raw bytes')\n"
            "    engine.log.info('nul\\x00inside')\n"
            "    engine.result.set('bin\\udcff')\n"
        ),
    },
    "orphan_child": {
        "timeout": 10,
        "expect": ("completed", "parent done"),
        "python": (
            "import subprocess\n"
            "def Run(engine):\n"
            "    subprocess.Popen(['sleep', '300'])\n"
            "    engine.result.set('parent done')\n"
        ),
    },
}

LANGUAGES = ("python",)
CASES = [
    pytest.param(name, language, id=f"{language}-{name}")
    for name, attack in ATTACKS.items()
    for language in LANGUAGES
    if language in attack
]


def _wait_finished(platform, run_id: str, seconds: float = 30) -> dict:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while True:
        run = requests.get(platform.url(f"/coderun/{run_id}")).json()
        if run["status"] in ("completed", "failed") or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


@pytest.mark.parametrize(("attack", "language"), CASES)
def test_attack_is_contained(platform, attack: str, language: str):
    case = ATTACKS[attack]
    code = create_code(platform, case[language], language=language, timeout=case["timeout"])
    response = call(platform, code["id"])
    run_id = response.headers.get("X-Run-Id") or (
        response.json().get("run_id") if response.status_code >= 400 else None
    )
    if run_id is None:
        runs = requests.get(platform.url("/coderun"), params={"code_id": code["id"]}).json()
        run_id = runs[0]["id"]
    run = _wait_finished(platform, run_id)
    status, reason = case["expect"]
    assert run["status"] == status, run
    if reason:
        reasons = reason if isinstance(reason, tuple) else (reason,)
        assert any(r in run["result"] for r in reasons), run["result"]
    # Nothing of the run is left on the Docker engine.
    leftovers = docker.from_env().containers.list(
        all=True, filters={"label": f"codeactions.run_id={run_id}"})
    assert leftovers == []
    # The worker serves the next run normally.
    hello = create_code(platform, _HELLO[language], language=language)
    after = call(platform, hello["id"])
    assert after.status_code == 200 and after.text == "ok"


_HELLO = {"python": "def Run(engine):\n    engine.result.set('ok')\n"}


def test_sandbox_firewall_blocks_private_and_link_local_ranges(platform):
    """Proved on the rules, not by sending traffic to addresses outside this machine."""
    rules = subprocess.run(["iptables", "-S", "DOCKER-USER"], capture_output=True,
                           text=True, check=True).stdout
    for cidr in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
                 "100.64.0.0/10"):
        assert f"-A DOCKER-USER -d {cidr} -i ca-sandbox0 -j DROP" in rules, cidr
    host_rules = subprocess.run(["iptables", "-S", "INPUT"], capture_output=True, text=True,
                                check=True).stdout
    assert "-A INPUT -i ca-sandbox0 -j DROP" in host_rules


def test_no_docker_socket_or_secret_mounts(platform):
    code = create_code(platform, '''
import os
def Run(engine):
    found = [p for p in ("/var/run/docker.sock", "/run/docker.sock", "/run/secrets",
                         "/var/run/secrets", "/root/.aws", "/.dockerenv")
             if os.path.exists(p) and p != "/.dockerenv"]
    mounts = open("/proc/self/mounts").read()
    engine.result.set({"found": found, "bind_mounts": [l for l in mounts.splitlines()
                       if " /etc/" not in l and "bind" in l]}, content_type="json")
''')
    got = call(platform, code["id"]).json()
    assert got == {"found": [], "bind_mounts": []}
