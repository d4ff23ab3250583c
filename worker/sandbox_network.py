"""The host side of the sandbox network: the firewall every sandbox link passes, and the
resolver files networked sandboxes see.

Each networked sandbox is a routed veth (worker/sandbox_link.py) whose host end is named
`casbx…`. Our own chain, jumped to first from FORWARD, decides everything those interfaces
forward: DNS to the host's resolvers is allowed, private, loopback, link-local (cloud
metadata), CGNAT and multicast ranges are dropped (that includes the sandbox subnet itself,
so sandboxes never reach each other), the rest of the world is allowed, and nothing new comes
in. INPUT drops everything arriving from a sandbox, so no host service is reachable whatever
address it binds. Egress is masqueraded behind the host's address.
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
from worker.sandbox_link import INTERFACE_PREFIX

log = logging.getLogger(__name__)

CHAIN = "CODEACTIONS-SANDBOX"
SANDBOX_INTERFACES = f"{INTERFACE_PREFIX}+"
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
HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tsandbox\n"


@contextlib.contextmanager
def _host_lock() -> Iterator[None]:
    """Workers of one host start together: one at a time checks and installs (no
    duplicated firewall rules)."""
    directory = Path("/run/lock") if Path("/run/lock").is_dir() else Path("/tmp")
    with open(directory / "codeactions-sandbox-network.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_network(settings: Settings) -> None:
    """Make sure the firewall, forwarding and the sandboxes' /etc files are in place."""
    subnet = ipaddress.ip_network(settings.sandbox_subnet)
    if not any(subnet.subnet_of(ipaddress.ip_network(blocked)) for blocked in BLOCKED_RANGES):
        # Sandboxes must not reach each other: their own addresses have to be dropped too.
        raise ValueError(f"FLOWS_CODE_ACTIONS_SANDBOX_SUBNET {subnet} is not a private range")
    with _host_lock():
        ensure_firewall(str(subnet))
        forwarding = Path("/proc/sys/net/ipv4/ip_forward")
        if forwarding.read_text().strip() != "1":
            forwarding.write_text("1")
    write_etc_files(settings)


def etc_files(settings: Settings) -> dict[str, str]:
    """Host file → path in a networked sandbox (mounted read-only)."""
    directory = Path(settings.state_dir, "sandbox-etc").absolute()
    return {str(directory / "resolv.conf"): "/etc/resolv.conf",
            str(directory / "hosts"): "/etc/hosts"}


def write_etc_files(settings: Settings) -> None:
    contents = {"/etc/resolv.conf": "".join(f"nameserver {r}\n" for r in resolvers()),
                "/etc/hosts": HOSTS}
    for host_path, inside in etc_files(settings).items():
        path = Path(host_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != contents[inside]:
            temporary = path.with_suffix(".new")
            temporary.write_text(contents[inside])
            temporary.chmod(0o644)
            temporary.replace(path)


def resolvers() -> list[str]:
    """The host's IPv4 resolvers a sandbox can reach (a loopback one, like systemd-resolved's
    stub, is the host's own and stays out of reach)."""
    servers = []
    try:
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                address = ipaddress.ip_address(parts[1])
                if address.version == 4 and not address.is_loopback:
                    servers.append(parts[1])
    except (OSError, ValueError):
        pass
    return servers


def chain_rules() -> list[list[str]]:
    """Our chain, in order: the first match decides."""
    rules = [["-i", SANDBOX_INTERFACES, "-d", resolver, "-p", proto, "--dport", "53",
              "-j", "ACCEPT"] for resolver in resolvers() for proto in ("udp", "tcp")]
    rules += [["-i", SANDBOX_INTERFACES, "-d", cidr, "-j", "DROP"] for cidr in BLOCKED_RANGES]
    return [
        *rules,
        ["-i", SANDBOX_INTERFACES, "-j", "ACCEPT"],
        ["-o", SANDBOX_INTERFACES, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
         "-j", "ACCEPT"],
        ["-o", SANDBOX_INTERFACES, "-j", "DROP"],
    ]


def hook_rules(subnet: str) -> list[tuple[str, str, list[str]]]:
    """(table, chain, rule) that lead sandbox traffic to our chain, drop what is meant for
    the host itself, and masquerade egress."""
    return [
        ("filter", "INPUT", ["-i", SANDBOX_INTERFACES, "-j", "DROP"]),
        ("filter", "FORWARD", ["-j", CHAIN]),
        ("nat", "POSTROUTING", ["-s", subnet, "!", "-o", SANDBOX_INTERFACES,
                                "-j", "MASQUERADE"]),
    ]


def ensure_firewall(subnet: str) -> None:
    iptables = shutil.which("iptables") or shutil.which("iptables", path="/usr/sbin:/sbin")
    if iptables is None:
        raise RuntimeError("iptables is required to isolate the sandbox network")
    # The chain is replaced whole in one commit (iptables-restore, other chains untouched):
    # never a moment with half the rules, whatever an earlier version installed.
    restore = "\n".join(["*filter", f":{CHAIN} - [0:0]",
                         *(" ".join(["-A", CHAIN, *rule]) for rule in chain_rules()),
                         "COMMIT", ""])
    subprocess.run([f"{iptables}-restore", "-w", "--noflush"], input=restore.encode(),
                   check=True, capture_output=True)
    for table, chain, rule in hook_rules(subnet):
        # -w: wait for the xtables lock; several workers of one host start together.
        present = subprocess.run([iptables, "-w", "-t", table, "-C", chain, *rule],
                                 capture_output=True)
        if present.returncode != 0:
            subprocess.run([iptables, "-w", "-t", table, "-I", chain, "1", *rule],
                           check=True, capture_output=True)
    log.info("sandbox firewall in place for %s", SANDBOX_INTERFACES)
