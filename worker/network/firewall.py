"""The host side of the sandbox network: the firewall every sandbox link passes, kept in
place by a guard, and the resolver files networked sandboxes see.

Each networked sandbox is a routed veth (worker/network/link.py) whose host end is named
`casbx…`. Every drop happens in the mangle table, which runs before the filter table's
FORWARD and INPUT, so an ACCEPT that Docker, kube-proxy or a CNI later inserts at the top of
filter/FORWARD (Docker does so at each start and network creation) cannot let a sandbox past
it. There, traffic from a sandbox with a source not its own is dropped, as is a new flow
beyond FLOWS_PER_SANDBOX tracked ones (the host's conntrack table is shared); DNS to the resolvers
goes on; private, loopback, link-local (cloud metadata), CGNAT and multicast ranges are
dropped (the sandbox subnet included, so sandboxes never reach each other; a destination is
checked after Docker's DNAT, so published ports of containers are covered too); nothing new
is let into a sandbox; everything addressed to the host itself is dropped. The filter table
then only accepts what is left (Docker's FORWARD policy is DROP) and egress is masqueraded.

Rules are written the way `iptables -S` prints them, so what is installed is compared as
text; a chain or hook that differs is replaced in one iptables-restore commit (never a
moment without it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import logging
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from shared.settings import Settings
from worker.network.link import INTERFACE_PREFIX, lock_directory

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
#: Seconds between two checks of the firewall; a sandbox is started or used only while the
#: last good check is younger than STALE_AFTER (else it is checked first, on the spot).
FIREWALL_RECHECK = 10.0
STALE_AFTER = 3 * FIREWALL_RECHECK
#: Seconds to wait for the xtables lock (Docker and other workers take it too).
XTABLES_WAIT = "5"
#: Tracked connections one sandbox may hold at once: one socket can open a flow per
#: destination, and the host's connection tracking table is shared by everything on it
#: (full, the host stops making connections).
FLOWS_PER_SANDBOX = 512


@contextlib.contextmanager
def _host_lock() -> Iterator[None]:
    """One worker of the host at a time checks and installs (no duplicated rules)."""
    with open(lock_directory() / "codeactions-sandbox-network.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class FirewallGuard:
    """Keeps the firewall, forwarding and the /etc files in place: a worker runs it in the
    background (a firewall reload elsewhere — firewalld, ufw, `iptables -F` — is undone
    within FIREWALL_RECHECK seconds); anything else driving sandboxes checks on the spot."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._subnet: ipaddress.IPv4Network | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def fresh(self) -> bool:
        checked = self._checked_at
        return checked is not None and time.monotonic() - checked < STALE_AFTER

    def check(self) -> None:
        """Install or repair everything; raises when it cannot (no sandbox should start)."""
        with self._lock:
            if self._subnet is None:  # once: later, our own /32 routes are in the table
                self._subnet = checked_subnet(self.settings.sandbox_subnet)
            ensure_network(self.settings, self._subnet)
            self._checked_at = time.monotonic()

    def ensure_fresh(self) -> None:
        if not self.fresh():
            self.check()

    def start(self) -> None:
        self.check()
        self._thread = threading.Thread(target=self._loop, name="firewall-guard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(FIREWALL_RECHECK):
            try:
                self.check()
            except Exception as exc:  # stays stale: sandboxes check (and fail) on the spot
                log.error("the sandbox firewall could not be checked: %s", exc)


def ensure_network(settings: Settings, subnet: ipaddress.IPv4Network) -> None:
    dns = sandbox_resolvers(settings)
    with _host_lock():
        ensure_firewall(str(subnet), dns)
        forwarding = Path("/proc/sys/net/ipv4/ip_forward")
        if forwarding.read_text().strip() != "1":
            forwarding.write_text("1")
        write_etc_files(settings, dns)


def checked_subnet(value: str) -> ipaddress.IPv4Network:
    """The sandbox subnet, refused unless it is a private range of at least 256 addresses
    that no route of this host already covers (a sandbox's /32 would capture that traffic).
    Our own sandboxes' /32 routes inside it are fine."""
    subnet = ipaddress.ip_network(value, strict=True)
    if not isinstance(subnet, ipaddress.IPv4Network) or subnet.prefixlen > 24 or not any(
        subnet.subnet_of(ipaddress.IPv4Network(allowed)) for allowed in SUBNET_RANGES
    ):
        raise ValueError(f"FLOWS_CODE_ACTIONS_SANDBOX_SUBNET {value}: expected an IPv4 range "
                         f"of /24 or larger inside one of {', '.join(SUBNET_RANGES)}")
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        routes = ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE)
    for route in routes:
        if route["dst_len"] == 0:
            continue
        routed = ipaddress.IPv4Network(f"{route.get_attr('RTA_DST')}/{route['dst_len']}")
        if routed.prefixlen == 32 and routed.subnet_of(subnet):
            continue  # a sandbox's (ours or another worker's)
        if routed.overlaps(subnet):
            raise ValueError(f"FLOWS_CODE_ACTIONS_SANDBOX_SUBNET {subnet} overlaps {routed}, "
                             "which this host already routes")
    return subnet


def local_addresses() -> set[str]:
    """This host's IPv4 addresses."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET)}


def sandbox_resolvers(settings: Settings) -> list[str]:
    """`…_SANDBOX_RESOLVERS` if set, else the host's own usable ones. A resolver on the host
    itself is out of a sandbox's reach (everything to the host is dropped): refused."""
    configured = [r.strip() for r in settings.sandbox_resolvers.split(",") if r.strip()]
    local = local_addresses()
    for resolver in configured:
        address = ipaddress.ip_address(resolver)
        if address.version != 4 or address.is_loopback or resolver in local:
            raise ValueError(f"FLOWS_CODE_ACTIONS_SANDBOX_RESOLVERS: {resolver} is not an IPv4 "
                             "address off this host (sandboxes never reach the host itself)")
    found = configured or [r for r in host_resolvers() if r not in local]
    if not found:
        log.warning("sandboxes get no DNS resolver: the host lists none off the host itself; "
                    "set FLOWS_CODE_ACTIONS_SANDBOX_RESOLVERS")
    return found


def host_resolvers() -> list[str]:
    """The IPv4 resolvers of the host's /etc/resolv.conf, loopback ones (like
    systemd-resolved's stub) left out."""
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


def etc_files(settings: Settings) -> dict[str, str]:
    """Host file → path in a networked sandbox (mounted read-only). The sandbox's mount table
    shows the host path, so it lies in a neutral place named only by a hash (one per state
    dir: workers of different platforms on one host never share it), never under the
    platform's state dir."""
    key = hashlib.sha256(str(Path(settings.state_dir).absolute()).encode()).hexdigest()[:12]
    directory = lock_directory() / "codeactions-sandbox-etc" / key
    return {str(directory / "resolv.conf"): "/etc/resolv.conf",
            str(directory / "hosts"): "/etc/hosts"}


def write_etc_files(settings: Settings, dns: list[str]) -> None:
    contents = {"/etc/resolv.conf": "".join(f"nameserver {r}\n" for r in dns),
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


def drop_rules(subnet: str, dns: list[str]) -> list[str]:
    """The mangle chain, in order: the first match decides (RETURN lets a packet on)."""
    i = f"-i {SANDBOX_INTERFACES}"
    rules = [f"! -s {subnet} {i} -j DROP",
             f"{i} -m conntrack --ctstate NEW -m connlimit --connlimit-above "
             f"{FLOWS_PER_SANDBOX} --connlimit-mask 32 --connlimit-saddr -j DROP"]
    rules += [f"-d {resolver}/32 {i} -p {proto} -m {proto} --dport 53 -j RETURN"
              for resolver in dns for proto in ("udp", "tcp")]
    rules += [f"-d {cidr} {i} -j DROP" for cidr in BLOCKED_RANGES]
    rules.append(f"-o {SANDBOX_INTERFACES} -m conntrack ! --ctstate RELATED,ESTABLISHED "
                 "-j DROP")
    return rules


def accept_rules() -> list[str]:
    """The filter chain: what passed the drops is forwarded, whatever the default policy."""
    return [f"-i {SANDBOX_INTERFACES} -j ACCEPT",
            f"-o {SANDBOX_INTERFACES} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]


#: (table, chain, rule) kept at the top of their chains, in this order.
HOOKS = (
    ("mangle", "INPUT", f"-i {SANDBOX_INTERFACES} -j DROP"),
    ("mangle", "FORWARD", f"-i {SANDBOX_INTERFACES} -j {CHAIN}"),
    ("mangle", "FORWARD", f"-o {SANDBOX_INTERFACES} -j {CHAIN}"),
    ("filter", "FORWARD", f"-i {SANDBOX_INTERFACES} -j {CHAIN}"),
    ("filter", "FORWARD", f"-o {SANDBOX_INTERFACES} -j {CHAIN}"),
)


def ensure_firewall(subnet: str, dns: list[str]) -> None:
    iptables = shutil.which("iptables") or shutil.which("iptables", path="/usr/sbin:/sbin")
    if iptables is None:
        raise RuntimeError("iptables is required to isolate the sandbox network")

    def listed(table: str, chain: str) -> list[str]:
        printed = subprocess.run([iptables, "-w", XTABLES_WAIT, "-t", table, "-S", chain],
                                 capture_output=True, text=True)
        prefix = f"-A {chain} "
        return [line[len(prefix):] for line in printed.stdout.splitlines()
                if line.startswith(prefix)]

    restore: list[str] = []
    for table, rules in (("mangle", drop_rules(subnet, dns)), ("filter", accept_rules())):
        lines = []
        if listed(table, CHAIN) != rules:  # declaring the chain empties it, in this commit
            lines += [f":{CHAIN} - [0:0]", *(f"-A {CHAIN} {rule}" for rule in rules)]
        for chain in dict.fromkeys(c for t, c, _ in HOOKS if t == table):
            hooks = [rule for t, c, rule in HOOKS if (t, c) == (table, chain)]
            present = listed(table, chain)
            if present[:len(hooks)] != hooks:
                lines += [f"-D {chain} {rule}" for rule in present if rule in hooks]
                lines += [f"-I {chain} {n} {rule}" for n, rule in enumerate(hooks, 1)]
        if lines:
            restore += [f"*{table}", *lines, "COMMIT"]
    if restore:
        subprocess.run([f"{iptables}-restore", "-w", XTABLES_WAIT, "--noflush"],
                       input="\n".join([*restore, ""]).encode(), check=True,
                       capture_output=True)
        log.info("sandbox firewall installed for %s", SANDBOX_INTERFACES)
    masquerade = ["-s", subnet, "!", "-o", SANDBOX_INTERFACES, "-j", "MASQUERADE"]
    if subprocess.run([iptables, "-w", XTABLES_WAIT, "-t", "nat", "-C", "POSTROUTING",
                       *masquerade], capture_output=True).returncode != 0:
        subprocess.run([iptables, "-w", XTABLES_WAIT, "-t", "nat", "-I", "POSTROUTING", "1",
                        *masquerade], check=True, capture_output=True)
