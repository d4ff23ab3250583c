"""One container policy, two spellings: worker/sandbox/hardening.py's ContainerPolicy gives Docker the
sandbox through the API (`host_config`, for create_hardened) and as `docker run` flags
(`run_flags`, used by the engine tests and the bench's cold baseline). Both must create the
same container, or the engine tests and the bench would test something other than what runs
user code."""

from __future__ import annotations

import subprocess
import uuid

import pytest

#: What makes a sandbox a sandbox, as Docker reports it back.
HOST_CONFIG_KEYS = ("ReadonlyRootfs", "Tmpfs", "CapDrop", "SecurityOpt", "PidsLimit", "Memory",
                    "MemorySwap", "Ulimits", "NetworkMode", "IpcMode", "Init", "Privileged",
                    "CapAdd", "Binds", "Sysctls")


def _policy(client, container_id: str) -> dict:  # noqa: ANN001
    attrs = client.api.inspect_container(container_id)
    host = attrs["HostConfig"]
    return {
        **{key: host.get(key) for key in HOST_CONFIG_KEYS},
        "Ulimits": sorted((u["Name"], u["Soft"], u["Hard"]) for u in host.get("Ulimits") or []),
        "Binds": sorted(host.get("Binds") or []),  # the CLI's order is its own
        "LogType": host["LogConfig"]["Type"],
        "User": attrs["Config"]["User"],
        # what PID 1 runs (the CLI puts what follows the image in Cmd, the API in Entrypoint)
        "Argv": (attrs["Config"]["Entrypoint"] or []) + (attrs["Config"]["Cmd"] or []),
    }


@pytest.mark.parametrize("network", [False, True], ids=["no-network", "network"])
def test_run_flags_create_the_same_container_as_the_worker(
    docker_client, python_image: str, network: bool  # noqa: ANN001
) -> None:
    from shared.settings import Settings
    from worker.sandbox.hardening import INIT, SECCOMP, image_entrypoint
    from worker.sandbox.sandbox import Sandbox, SandboxLimits

    settings = Settings()
    sandbox = Sandbox(docker_client, settings)
    limits = SandboxLimits.for_code(settings, 30, network=network)
    label = {"codeactions.test": f"hardening-{uuid.uuid4().hex[:8]}"}
    by_api = sandbox.create(python_image, limits, label)
    by_cli = ""
    try:
        user = docker_client.api.inspect_container(by_api)["Config"]["User"]
        policy = sandbox.policy(limits, user=user)
        entrypoint = list(image_entrypoint(docker_client.api, python_image))
        proc = subprocess.run(
            ["docker", "create", "--label", f"codeactions.test={label['codeactions.test']}",
             *policy.run_flags(), python_image, *policy.init_args(entrypoint)],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert proc.returncode == 0, proc.stderr
        by_cli = proc.stdout.strip()
        api_policy, cli_policy = _policy(docker_client, by_api), _policy(docker_client, by_cli)
        assert cli_policy == api_policy
        # and it is the policy: a uid of its own, read-only, nothing added, our seccomp
        # profile, no swap, no output kept
        assert api_policy["User"] in sandbox.uids and api_policy["ReadonlyRootfs"] is True
        assert api_policy["CapDrop"] == ["ALL"] and not api_policy["CapAdd"]
        assert api_policy["SecurityOpt"] == ["no-new-privileges", f"seccomp={SECCOMP}"]
        assert "/proc/cmdline" in docker_client.api.inspect_container(by_api)[
            "HostConfig"]["MaskedPaths"]
        assert api_policy["MemorySwap"] == api_policy["Memory"] == limits.memory_bytes
        assert api_policy["LogType"] == "none"
        # PID 1 is our init in front of the engine, never Docker's (the run could read that)
        assert api_policy["Init"] is False
        assert api_policy["Argv"] == [INIT, "--", *entrypoint]
        # Docker networks nothing; a networked sandbox only sees the resolver and hosts files
        # (its link is the worker's: tests/integration/test_sandbox_network.py).
        assert api_policy["NetworkMode"] == "none"
        assert docker_client.api.inspect_container(by_api)["Config"]["NetworkDisabled"] is True
        etc = sorted(bind.split(":")[1] for bind in api_policy["Binds"] or [])
        assert etc == (["/etc/hosts", "/etc/resolv.conf"] if network else [])
    finally:
        for container_id in (by_api, by_cli):
            if container_id:
                docker_client.api.remove_container(container_id, force=True)
