"""The host side of the sandbox network: the firewall every sandbox link passes, and the
resolver files networked sandboxes see.

Each networked sandbox is a routed veth (worker/sandbox_link.py) whose host end is named
`casbx…`. Every drop happens in the mangle table, which runs before the filter table's
FORWARD and INPUT, so an ACCEPT that Docker, kube-proxy or a CNI later inserts at the top of
filter/FORWARD (Docker does so at each start and network creation) cannot let a sandbox past
it. There, traffic from a sandbox with a source not its own is dropped; DNS to the resolvers
goes on; private, loopback, link-local (cloud metadata), CGNAT and multicast ranges are
dropped (the sandbox subnet included, so sandboxes never reach each other; a destination is
checked after Docker's DNAT, so published ports of containers are covered too); nothing new
is let into a sandbox; everything addressed to the host itself is dropped. The filter table
then only accepts what is left (Docker's FORWARD policy is DROP) and egress is masqueraded.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import shutil
import socket
import subprocess
import tempfile
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
#: Where a sandbox subnet may lie: private ranges (dropped as destinations, so sandboxes never
#: reach each other) that hold neither loopback, link-local (the gateway) nor multicast.
SUBNET_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
MAIN_TABLE = 254
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
    """Make sure the firewall, forwarding and the sandboxes' /etc files are in place; run at
    worker start and again every little while (a firewall reload elsewhere flushes rules)."""
    subnet = checked_subnet(settings.sandbox_subnet)
    with _host_lock():
        ensure_firewall(str(subnet), sandbox_resolvers(settings))
        forwarding = Path("/proc/sys/net/ipv4/ip_forward")
        if forwarding.read_text().strip() != "1":
            forwarding.write_text("1")
        write_etc_files(settings)


def checked_subnet(value: str) -> ipaddress.IPv4Network:
    """The sandbox subnet, refused unless it is a private range of at least 256 addresses
    that no route of this host already covers (a sandbox's /32 would capture that traffic)."""
    subnet = ipaddress.ip_network(value, strict=True)
    if not isinstance(subnet, ipaddress.IPv4Network) or subnet.prefixlen > 24 or not any(
        subnet.subnet_of(ipaddress.ip_network(allowed)) for allowed in SUBNET_RANGES
    ):
        raise ValueError(f"FLOWS_CODE_ACTIONS_SANDBOX_SUBNET {value}: expected an IPv4 range "
                         f"of /24 or larger inside one of {', '.join(SUBNET_RANGES)}")
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        routes = ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE)
        ours = {link["index"] for link in ipr.get_links()
                if (link.get_attr("IFLA_IFNAME") or "").startswith(INTERFACE_PREFIX)}
    for route in routes:
        if route["dst_len"] == 0 or route.get_attr("RTA_OIF") in ours:
            continue
        routed = ipaddress.ip_network(f"{route.get_attr('RTA_DST')}/{route['dst_len']}")
        if routed.overlaps(subnet):
            raise ValueError(f"FLOWS_CODE_ACTIONS_SANDBOX_SUBNET {subnet} overlaps {routed}, "
                             "which this host already routes")
    return subnet


def sandbox_resolvers(settings: Settings) -> list[str]:
    """`…_SANDBOX_RESOLVERS` if set, else the host's own reachable ones."""
    configured = [r.strip() for r in settings.sandbox_resolvers.split(",") if r.strip()]
    for resolver in configured:
        if ipaddress.ip_address(resolver).version != 4:
            raise ValueError(f"FLOWS_CODE_ACTIONS_SANDBOX_RESOLVERS: {resolver} is not IPv4")
    found = configured or resolvers()
    if not found:
        log.warning("sandboxes get no DNS resolver: the host lists only loopback ones; set "
                    "FLOWS_CODE_ACTIONS_SANDBOX_RESOLVERS")
    return found


def etc_files(settings: Settings) -> dict[str, str]:
    """Host file → path in a networked sandbox (mounted read-only)."""
    directory = Path(settings.state_dir, "sandbox-etc").absolute()
    return {str(directory / "resolv.conf"): "/etc/resolv.conf",
            str(directory / "hosts"): "/etc/hosts"}


def write_etc_files(settings: Settings) -> None:
    contents = {"/etc/resolv.conf": "".join(f"nameserver {r}\n"
                                            for r in sandbox_resolvers(settings)),
                "/etc/hosts": HOSTS}
    for host_path, inside in etc_files(settings).items():
        path = Path(host_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.read_text() == contents[inside]:
            continue
        # Replaced whole: a sandbox starting meanwhile mounts the old file or the new one.
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as temporary:
            temporary.write(contents[inside])
        Path(temporary.name).chmod(0o644)
        Path(temporary.name).replace(path)


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


def drop_rules(subnet: str, dns: list[str]) -> list[list[str]]:
    """The mangle chain, in order: the first match decides (RETURN lets a packet on)."""
    rules = [["-i", SANDBOX_INTERFACES, "!", "-s", subnet, "-j", "DROP"]]
    rules += [["-i", SANDBOX_INTERFACES, "-d", resolver, "-p", proto, "--dport", "53",
               "-j", "RETURN"] for resolver in dns for proto in ("udp", "tcp")]
    rules += [["-i", SANDBOX_INTERFACES, "-d", cidr, "-j", "DROP"] for cidr in BLOCKED_RANGES]
    rules.append(["-o", SANDBOX_INTERFACES, "-m", "conntrack", "!", "--ctstate",
                  "RELATED,ESTABLISHED", "-j", "DROP"])
    return rules


def accept_rules() -> list[list[str]]:
    """The filter chain: what passed the drops is forwarded, whatever the default policy."""
    return [["-i", SANDBOX_INTERFACES, "-j", "ACCEPT"],
            ["-o", SANDBOX_INTERFACES, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
             "-j", "ACCEPT"]]


def hook_rules(subnet: str) -> list[tuple[str, str, list[str]]]:
    """(table, chain, rule), each kept first in its chain."""
    return [
        ("mangle", "INPUT", ["-i", SANDBOX_INTERFACES, "-j", "DROP"]),
        ("mangle", "FORWARD", ["-j", CHAIN]),
        ("filter", "FORWARD", ["-j", CHAIN]),
        ("nat", "POSTROUTING", ["-s", subnet, "!", "-o", SANDBOX_INTERFACES,
                                "-j", "MASQUERADE"]),
    ]


def ensure_firewall(subnet: str, dns: list[str]) -> None:
    iptables = shutil.which("iptables") or shutil.which("iptables", path="/usr/sbin:/sbin")
    if iptables is None:
        raise RuntimeError("iptables is required to isolate the sandbox network")
    # Both chains are replaced whole in one commit (iptables-restore, other chains
    # untouched): never a moment with half the rules, whatever an earlier start installed.
    restore = []
    for table, rules in (("mangle", drop_rules(subnet, dns)), ("filter", accept_rules())):
        restore += [f"*{table}", f":{CHAIN} - [0:0]",
                    *(" ".join(["-A", CHAIN, *rule]) for rule in rules), "COMMIT"]
    subprocess.run([f"{iptables}-restore", "-w", "--noflush"],
                   input="\n".join([*restore, ""]).encode(), check=True, capture_output=True)
    for table, chain, rule in hook_rules(subnet):
        _keep_first(iptables, table, chain, rule)
    log.debug("sandbox firewall in place for %s", SANDBOX_INTERFACES)


def _keep_first(iptables: str, table: str, chain: str, rule: list[str]) -> None:
    """Rule number 1 of the chain, moved back there if something was inserted above it."""
    # -w: wait for the xtables lock; several workers of one host start together.
    listed = subprocess.run([iptables, "-w", "-t", table, "-S", chain], capture_output=True,
                            text=True, check=True).stdout.splitlines()
    appended = [line for line in listed if line.startswith("-A ")]
    first = appended[0].split()[2:] if appended else []
    if _same_rule(first, rule):
        return
    while subprocess.run([iptables, "-w", "-t", table, "-D", chain, *rule],
                         capture_output=True).returncode == 0:
        pass  # every copy, wherever it is
    subprocess.run([iptables, "-w", "-t", table, "-I", chain, "1", *rule], check=True,
                   capture_output=True)


def _same_rule(listed: list[str], rule: list[str]) -> bool:
    """iptables -S spells a rule its own way (order of matches, `-m` added): compare words."""
    return sorted(word for word in listed if word not in ("-m", "conntrack")) == sorted(
        word for word in rule if word not in ("-m", "conntrack"))
