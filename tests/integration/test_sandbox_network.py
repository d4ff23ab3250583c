"""The sandbox network with real traffic: every address a sandbox talks to lives in a network
namespace this test makes (an "outside host" behind its own veth on this machine), so nothing
leaves the machine. A public address is reached (masqueraded behind the host), private ones
are not; the host end of a sandbox's link is gone with its container."""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from pyroute2 import Conntrack, IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

from tests.integration.helpers import call, container_gone, create_code, run_now
from worker.network.firewall import (
    BLOCKED_RANGES,
    CHAIN,
    FIREWALL_RECHECK,
    FLOWS_PER_SANDBOX,
    sandbox_resolvers,
)
from worker.network.link import CLONE_NEWNET, INTERFACE_PREFIX, host_end

PORT = 8080


class OutsideHost:
    """A TCP server at `address` in a namespace of its own, routed from the host through a
    /30 veth (the host end has the /30's other address). It answers each connection with the
    peer's address."""

    def __init__(self, address: str) -> None:
        network = ipaddress.ip_network(f"{address}/30", strict=False)
        self.address = address
        self.gateway = next(str(h) for h in network.hosts() if str(h) != address)
        self.interface = f"catest{uuid.uuid4().hex[:8]}"
        self._ready = threading.Event()
        self._configured = threading.Event()
        self._listening = threading.Event()
        self._stop = threading.Event()
        self._netns: int | None = None
        self._listener: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> OutsideHost:
        self._thread.start()
        assert self._ready.wait(10) and self._netns is not None
        with IPRoute() as ipr:
            ipr.link("add", ifname=self.interface, kind="veth",
                     peer={"ifname": "eth0", "net_ns_fd": self._netns})
            index = ipr.link_lookup(ifname=self.interface)[0]
            ipr.addr("add", index=index, address=self.gateway, prefixlen=30)
            ipr.link("set", index=index, state="up")
        self._configured.set()
        assert self._listening.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=self.interface)
            try:
                if found:
                    ipr.link("del", index=found[0])
            except NetlinkError as exc:
                # The namespace's end went first, taking the pair with it.
                if exc.code != errno.ENODEV:
                    raise

    def _serve(self) -> None:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        # This thread alone moves into a new namespace and ends with it.
        assert libc.unshare(CLONE_NEWNET) == 0, ctypes.get_errno()
        self._netns = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        self._ready.set()
        self._configured.wait(10)
        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            eth0 = ipr.link_lookup(ifname="eth0")[0]
            ipr.addr("add", index=eth0, address=self.address, prefixlen=30)
            ipr.link("set", index=eth0, state="up")
            ipr.route("add", dst="0.0.0.0/0", gateway=self.gateway)
        listener = socket.create_server((self.address, PORT))
        listener.settimeout(0.2)
        self._listening.set()
        while not self._stop.is_set():
            try:
                conn, peer = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(f"hello {peer[0]}".encode())
        listener.close()
        os.close(self._netns)


CONNECT = '''
import socket
def Run(engine):
    s = socket.socket()
    s.settimeout(1.5)
    try:
        s.connect(({address!r}, {port}))
        engine.result.set(s.recv(100).decode())
    except OSError as exc:
        engine.result.set("unreachable: " + type(exc).__name__)
'''


def _from_host(address: str) -> str:
    with socket.create_connection((address, PORT), timeout=3) as conn:
        return conn.recv(100).decode()


def test_a_sandbox_reaches_a_public_address_masqueraded_behind_the_host(platform):
    # 198.51.100.0/24 (TEST-NET-2) is not a private range: the firewall lets it through.
    with OutsideHost("198.51.100.2") as host:
        assert _from_host(host.address) == f"hello {host.gateway}"  # the server is up
        code = create_code(platform, CONNECT.format(address=host.address, port=PORT))
        run = run_now(platform, code["id"])
        # The server saw the host's address on that link: the sandbox's own is masqueraded.
        assert run["status"] == "completed" and run["result"] == f"hello {host.gateway}", run
        assert container_gone(run["container_id"])
        # Its link went with it (a namespace is torn down in the background: wait for it).
        deadline = time.monotonic() + 20
        while Path("/sys/class/net", host_end(run["container_id"])).exists():
            assert time.monotonic() < deadline, "the sandbox's host end outlived it"
            time.sleep(0.2)


# Private ranges, and the cloud metadata address (link-local).
@pytest.mark.parametrize("address", ["192.168.231.2", "172.31.231.2", "10.214.231.2",
                                     "169.254.169.254"])
def test_a_sandbox_cannot_reach_a_private_address(platform, address):
    with OutsideHost(address) as host:
        assert _from_host(host.address) == f"hello {host.gateway}"  # reachable, but not for it
        code = create_code(platform, CONNECT.format(address=host.address, port=PORT))
        run = run_now(platform, code["id"])
        assert run["status"] == "completed" and run["result"].startswith("unreachable"), run


def test_a_sandbox_sees_its_own_link_and_the_hosts_resolvers(platform):
    code = create_code(platform, '''
import socket
def Run(engine):
    names = sorted(name for _, name in socket.if_nameindex())
    engine.result.set({"interfaces": names, "resolv": open("/etc/resolv.conf").read(),
                       "localhost": socket.gethostbyname("localhost")}, content_type="json")
''')
    run = run_now(platform, code["id"])
    got = json.loads(run["result"])
    assert got["interfaces"] == ["eth0", "lo"]
    expected = sandbox_resolvers(platform.settings())
    assert got["resolv"] == "".join(f"nameserver {r}\n" for r in expected)
    assert got["localhost"] == "127.0.0.1"


def test_a_sandbox_cannot_fill_the_hosts_connection_tracking(platform):
    """One socket, a datagram to each of 2,000 ports: each would be a tracked flow; past
    FLOWS_PER_SANDBOX the rest are dropped before conntrack keeps them."""
    with OutsideHost("198.51.100.6") as host:
        code = create_code(platform, f'''
import socket
def Run(engine):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = 0
    for port in range(20000, 22000):
        try:
            s.sendto(b"x", ({host.address!r}, port))
            sent += 1
        except OSError:
            pass
    s.connect(({host.address!r}, 9))
    engine.result.set({{"address": s.getsockname()[0], "sent": sent}}, content_type="json")
''', timeout=60)
        run = run_now(platform, code["id"])
        got = json.loads(run["result"])
        with Conntrack() as tracker:
            flows = sum(1 for _ in tracker.dump_entries(
                tuple_orig=NFCTAttrTuple(saddr=got["address"])))
        assert got["sent"] > FLOWS_PER_SANDBOX  # the datagrams left the code
        # Tracked flows of that sandbox (unreplied UDP stays 30 s): at the limit, not past it.
        assert FLOWS_PER_SANDBOX // 2 < flows <= FLOWS_PER_SANDBOX, flows


def _rules(table: str, chain: str) -> list[str]:
    return [line for line in subprocess.run(
        ["iptables", "-w", "-t", table, "-S", chain], capture_output=True, text=True,
        check=True).stdout.splitlines() if line.startswith("-A")]


def test_sandbox_firewall_rules_are_in_place(platform):
    """The mangle chain's order is the policy: spoofed sources dropped, DNS to the
    resolvers on, private ranges dropped, nothing new let in; the hooks first in mangle (Docker
    may put its own above ours in filter/FORWARD: harmless, see the next test)."""
    chain = _rules("mangle", CHAIN)
    drops = [f"-A {CHAIN} -d {cidr} -i {INTERFACE_PREFIX}+ -j DROP" for cidr in BLOCKED_RANGES]
    assert chain[0].startswith(f"-A {CHAIN} ! -s ") and chain[0].endswith("-j DROP"), chain
    assert f"--connlimit-above {FLOWS_PER_SANDBOX}" in chain[1], chain
    assert chain[-len(drops) - 1:-1] == drops
    assert "RELATED,ESTABLISHED -j DROP" in chain[-1] and "! --ctstate" in chain[-1]
    assert _rules("mangle", "INPUT")[0] == f"-A INPUT -i {INTERFACE_PREFIX}+ -j DROP"
    hooks = [f"-A FORWARD -{side} {INTERFACE_PREFIX}+ -j {CHAIN}" for side in ("i", "o")]
    assert _rules("mangle", "FORWARD")[:2] == hooks
    assert set(hooks) <= set(_rules("filter", "FORWARD"))


def test_an_accept_inserted_above_ours_opens_nothing(platform):
    """Docker (at each start, at each network it creates) and kube-proxy insert ACCEPT rules
    at the top of filter/FORWARD; the drops live in mangle, which runs first."""
    ahead = ["FORWARD", "-i", f"{INTERFACE_PREFIX}+", "-j", "ACCEPT"]
    subprocess.run(["iptables", "-w", "-I", *ahead[:1], "1", *ahead[1:]], check=True)
    try:
        with OutsideHost("192.168.232.2") as host:
            assert _from_host(host.address) == f"hello {host.gateway}"  # the server is up
            code = create_code(platform, CONNECT.format(address=host.address, port=PORT))
            run = run_now(platform, code["id"])
            assert run["result"].startswith("unreachable"), run
    finally:
        subprocess.run(["iptables", "-w", "-D", *ahead], check=True)


def test_a_flushed_firewall_comes_back_before_the_next_sandboxes(platform):
    """A firewall reload elsewhere drops our rules; a worker's guard puts them back within
    FIREWALL_RECHECK seconds (meanwhile runs go on)."""
    hook = ["INPUT", "-i", f"{INTERFACE_PREFIX}+", "-j", "DROP"]
    subprocess.run(["iptables", "-w", "-t", "mangle", "-D", *hook], check=True)
    code = create_code(platform, "def Run(engine):\n    engine.result.set('ok')\n")
    deadline = time.monotonic() + FIREWALL_RECHECK + 30
    while f"-A {' '.join(hook)}" not in _rules("mangle", "INPUT"):
        assert time.monotonic() < deadline, "the sandbox firewall was not restored"
        assert call(platform, code["id"]).text == "ok"  # runs start containers
        time.sleep(0.5)
