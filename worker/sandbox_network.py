"""The sandbox's network: a bridge whose containers reach the internet and nothing of ours.

Docker's bridge alone lets a container reach every host service bound to 0.0.0.0 (through the
gateway address) and every private range the host routes to. Two iptables rules close that:
INPUT drops everything arriving from the bridge (no host service is reachable, whatever it
binds), DOCKER-USER drops forwarding to private, link-local and shared ranges. DNS to the
host's own resolvers stays open so actions can still resolve public names.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from shared.settings import Settings

log = logging.getLogger(__name__)

BLOCKED_RANGES = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "0.0.0.0/8",
    "192.0.0.0/24",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
)


@contextlib.contextmanager
def _host_lock() -> Iterator[None]:
    """Workers of one host start together: one at a time checks and installs (no race to
    create the bridge, no duplicated firewall rules)."""
    directory = Path("/run/lock") if Path("/run/lock").is_dir() else Path("/tmp")
    with open(directory / "codeactions-sandbox-network.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_network(client, settings: Settings) -> str:  # noqa: ANN001 - docker client
    """Create the sandbox bridge if missing and make sure the firewall rules are in place."""
    with _host_lock():
        return _ensure_network(client, settings)


def _ensure_network(client, settings: Settings) -> str:  # noqa: ANN001 - docker client
    import docker.errors

    name = settings.sandbox_network
    try:
        client.networks.get(name)
    except docker.errors.NotFound:
        try:
            client.networks.create(
                name,
                driver="bridge",
                labels={"codeactions.network": "sandbox"},
                options={
                    "com.docker.network.bridge.name": settings.sandbox_bridge,
                    "com.docker.network.bridge.enable_icc": "false",
                    "com.docker.network.bridge.enable_ip_masquerade": "true",
                },
            )
        except docker.errors.APIError:
            # Workers starting together on a fresh engine race to create it: the loser
            # finds the winner's network (and fails loudly if there still is none).
            client.networks.get(name)
    ensure_firewall(settings.sandbox_bridge)
    return name


def _resolvers() -> list[str]:
    servers = []
    try:
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                ipaddress.ip_address(parts[1])
                if ":" not in parts[1]:
                    servers.append(parts[1])
    except (OSError, ValueError):
        pass
    return servers


def firewall_rules(bridge: str) -> list[tuple[str, list[str]]]:
    """(chain, rule) pairs, most specific first: evaluated in this order once installed."""
    rules: list[tuple[str, list[str]]] = [("INPUT", ["-i", bridge, "-j", "DROP"])]
    for resolver in _resolvers():
        for proto in ("udp", "tcp"):
            rules.append(
                (
                    "DOCKER-USER",
                    ["-i", bridge, "-d", resolver, "-p", proto, "--dport", "53", "-j", "ACCEPT"],
                )
            )
    for cidr in BLOCKED_RANGES:
        rules.append(("DOCKER-USER", ["-i", bridge, "-d", cidr, "-j", "DROP"]))
    return rules


def ensure_firewall(bridge: str) -> None:
    iptables = shutil.which("iptables")
    if iptables is None:
        raise RuntimeError("iptables is required to isolate the sandbox network")
    # -w: wait for the xtables lock; several workers of one host start at the same time.
    subprocess.run([iptables, "-w", "-N", "DOCKER-USER"], capture_output=True)  # exists: fine
    rules = firewall_rules(bridge)
    # Insert in reverse so the final order in each chain matches `firewall_rules`.
    for chain, rule in reversed(rules):
        present = subprocess.run([iptables, "-w", "-C", chain, *rule], capture_output=True)
        if present.returncode != 0:
            subprocess.run([iptables, "-w", "-I", chain, "1", *rule], check=True,
                           capture_output=True)
    log.info("sandbox firewall in place on %s (%d rules)", bridge, len(rules))
