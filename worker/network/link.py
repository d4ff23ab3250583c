"""A networked sandbox's one link: a veth pair the worker plugs in itself.

Docker is asked for no network at all (NetworkDisabled: a bare namespace with loopback only,
no prestart hook, no embedded DNS, no iptables calls) because its own networking costs ~0.25
CPU-second per container and capped this machine at ~3 networked containers a second. After
start, the worker creates a veth pair with one end (`eth0`) inside the container's network
namespace, routes one /32 address to it and gives the container a default route through the
host end, which answers ARP for the gateway (proxy ARP) and has no address and no IPv6 of its
own. No bridge: sandboxes share no layer 2, and every packet between them or to the host
passes the host's firewall (worker/network/firewall.py).

Addresses come from `…_SANDBOX_SUBNET`; the kernel's routing table is the allocator (adding a
/32 route that exists fails), so workers of one host never hand out an address twice. They
are handed out in turn from a host-wide counter, so an address comes back only after the
whole subnet went round (hours), long after the connection tracking of its last holder's
flows expired: a late reply to one sandbox never reaches the next. When the container goes,
its namespace takes the pair and the route with it: nothing to clean up.
"""

from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import os
import random
import threading
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

#: Host ends are `casbx` + 10 hex digits; the firewall matches `casbx+`.
INTERFACE_PREFIX = "casbx"
#: The container's gateway: answered by the host end (proxy ARP), never a host address.
GATEWAY = "169.254.1.1"
CLONE_NEWNET = 0x40000000
SCOPE_LINK = 253
ADDRESS_ATTEMPTS = 64
EEXIST = 17
CONFIGURE_TIMEOUT = 10.0
#: The kernel registers a new namespace's loopback first, always as interface 1.
LOOPBACK_INDEX = 1


class LinkError(RuntimeError):
    """The container could not be given its network link (it must not run networked)."""


class SandboxLink:
    def __init__(self, subnet: str) -> None:
        self.subnet = ipaddress.ip_network(subnet)
        self._counter = lock_directory() / (
            f"codeactions-sandbox-{str(self.subnet).replace('/', '_')}")
        self._libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self._ipv6 = Path("/proc/sys/net/ipv6").is_dir()  # a host without IPv6 needs nothing

    def attach(self, container_id: str, pid: int) -> str:
        """Give the started container `pid` its eth0; return its address. LinkError if it
        cannot be done: the caller removes the container (it never runs unplugged)."""
        netns = self._open_netns(container_id, pid)
        try:
            name = host_end(container_id)
            with IPRoute() as ipr:
                ipr.link("add", ifname=name, kind="veth",
                         peer={"ifname": "eth0", "net_ns_fd": netns})
                index = ipr.link_lookup(ifname=name)[0]
                if self._ipv6:
                    _sysctl(f"ipv6/conf/{name}/disable_ipv6", "1")
                _sysctl(f"ipv4/conf/{name}/proxy_arp", "1")
                # Answer the sandbox's ARP for its gateway at once, not after up to 0.8 s.
                _sysctl(f"ipv4/neigh/{name}/proxy_delay", "0")
                ipr.link("set", index=index, state="up")
                address = self._claim_address(ipr, index)
            self._inside(netns, address)
            return address
        except LinkError:
            raise
        except Exception as exc:
            raise LinkError(f"could not attach the sandbox network: {exc}") from exc
        finally:
            os.close(netns)

    def _open_netns(self, container_id: str, pid: int) -> int:
        if pid <= 0:
            raise LinkError("the container is not running")
        try:
            netns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise LinkError(f"the container's process is gone: {exc}") from exc
        # The pid is Docker's word from a moment ago: make sure it is still the container's
        # process (not a reused pid) now that its namespace is held open.
        try:
            owner = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            owner = ""
        if container_id not in owner:
            os.close(netns)
            raise LinkError("the container's process is gone")
        return netns

    def _claim_address(self, ipr: IPRoute, index: int) -> str:
        """A free /32 of the subnet, routed to `index`; the route is the claim."""
        hosts = self.subnet.num_addresses - 2
        for _ in range(ADDRESS_ATTEMPTS):
            address = str(self.subnet.network_address + 1 + self._next_turn() % hosts)
            try:
                ipr.route("add", dst=f"{address}/32", oif=index, scope=SCOPE_LINK)
                return address
            except NetlinkError as exc:
                if exc.code != EEXIST:
                    raise
        raise LinkError(f"no free address in {self.subnet}")

    def _next_turn(self) -> int:
        """The host-wide counter (a locked file shared by every worker of the host)."""
        with open(self._counter, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            text = handle.read().strip()
            turn = int(text) if text.isdigit() else random.randrange(1 << 20)
            handle.seek(0)
            handle.truncate()
            handle.write(str(turn + 1))
            return turn

    def _inside(self, netns: int, address: str) -> None:
        """Configure the container's side from a thread that enters its namespace and then
        ends: nothing else of the worker ever runs in there."""
        failure: list[BaseException] = []

        def configure() -> None:
            try:
                if self._libc.setns(netns, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
                with IPRoute() as ipr:
                    ipr.link("set", index=LOOPBACK_INDEX, state="up")
                    eth0 = ipr.link_lookup(ifname="eth0")[0]
                    ipr.addr("add", index=eth0, address=address, prefixlen=32)
                    ipr.link("set", index=eth0, state="up")
                    ipr.route("add", dst=f"{GATEWAY}/32", oif=eth0, scope=SCOPE_LINK)
                    ipr.route("add", dst="0.0.0.0/0", gateway=GATEWAY, oif=eth0)
            except BaseException as exc:  # reported to the caller's thread
                failure.append(exc)

        thread = threading.Thread(target=configure, name="sandbox-link", daemon=True)
        thread.start()
        thread.join(CONFIGURE_TIMEOUT)
        if thread.is_alive():
            raise LinkError("configuring the sandbox's side of its link did not finish")
        if failure:
            raise failure[0]


def host_end(container_id: str) -> str:
    """The host-side interface of a container's link (15 characters, the kernel's limit)."""
    return f"{INTERFACE_PREFIX}{container_id[:10]}"


def lock_directory() -> Path:
    """Where the workers of one host share locks and counters."""
    return Path("/run/lock") if Path("/run/lock").is_dir() else Path("/tmp")


def _sysctl(name: str, value: str) -> None:
    Path("/proc/sys/net", name).write_text(value)
