"""Test hosts of the project's own: Linux network namespaces on a bridge this creates, each
a machine with an address of its own that reaches the root namespace (where the test runs
its fakes and forwarders) on the bridge's address. Needs root and iproute2's `ip`
(installed with apt-get when missing, as `make e2e` does nginx); where the namespaces
cannot be made, the test using them is skipped, saying why."""

import contextlib
import fcntl
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

# Every name starts with this and the pid of the test process, so a run never touches
# another's, and what a killed run left behind is recognised and removed by the next.
NAME = "msgt"
SUBNETS = ipaddress.ip_network("10.99.0.0/16")
LOCK_FILE = "/tmp/messaging-test-netns.lock"


class NamespaceError(Exception):
    """An `ip` command failed."""


@dataclass(frozen=True)
class Host:
    name: str
    namespace: str
    address: str

    @property
    def prefix(self) -> tuple[str, ...]:
        """What runs a command on this host."""
        return ("ip", "netns", "exec", self.namespace)

    def kill(self) -> list[int]:
        """SIGKILL every process on this host at once, as a power cut would; return their
        pids once all are gone."""
        return kill_everything_in(self.namespace)


@dataclass(frozen=True)
class Network:
    gateway: str  # the bridge's address, in the root namespace
    hosts: dict[str, Host]


def ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise NamespaceError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def kill_everything_in(namespace: str, timeout: float = 10.0) -> list[int]:
    killed = pids_in(namespace)
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while left := pids_in(namespace):
        if time.monotonic() > deadline:
            raise AssertionError(f"{namespace} still runs {left} after SIGKILL")
        time.sleep(0.05)
    return killed


def pids_in(namespace: str) -> list[int]:
    return [int(pid) for pid in ip("netns", "pids", namespace).split()]


def ensure_ip_command() -> None:
    """Install iproute2 when `ip` is missing and apt-get can; else skip, naming what is."""
    if shutil.which("ip"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("network namespaces need the `ip` command (apt-get install iproute2)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "iproute2"]):
        done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"`ip` is missing and `{' '.join(command)}` failed")
    if not shutil.which("ip"):
        pytest.skip("network namespaces need the `ip` command, and iproute2 did not bring it")


@contextlib.contextmanager
def private_network(*names: str) -> Iterator[Network]:
    """Make a bridge and one namespace per name on it; yield them; remove them all (and
    every process still on them) at the end, however the test ended."""
    if not sys.platform.startswith("linux"):
        pytest.skip("network namespaces are Linux only")
    if os.geteuid() != 0:
        pytest.skip("making network namespaces needs root")
    ensure_ip_command()
    base = f"{NAME}{os.getpid()}"
    bridge = f"{base}br"
    namespaces = [f"{base}{name}" for name in names]
    try:
        with open(LOCK_FILE, "w") as lock:
            # Another run may pick a subnet at the same moment: they take turns.
            fcntl.flock(lock, fcntl.LOCK_EX)
            remove_leftovers()
            subnet = free_subnet()
            addresses = [str(address) for address in subnet.hosts()]
            gateway = addresses[0]
            ip("link", "add", bridge, "type", "bridge")
            ip("addr", "add", f"{gateway}/{subnet.prefixlen}", "dev", bridge)
            ip("link", "set", bridge, "up")
        hosts = {}
        for number, (name, namespace) in enumerate(zip(names, namespaces, strict=True)):
            veth, peer = f"{base}{name}", f"{base}{name}p"
            address = addresses[10 + number]
            ip("netns", "add", namespace)
            ip("link", "add", veth, "type", "veth", "peer", "name", peer)
            ip("link", "set", peer, "netns", namespace)
            ip("link", "set", veth, "master", bridge, "up")
            ip("-n", namespace, "link", "set", peer, "name", "eth0")
            ip("-n", namespace, "addr", "add", f"{address}/{subnet.prefixlen}", "dev", "eth0")
            ip("-n", namespace, "link", "set", "eth0", "up")
            ip("-n", namespace, "link", "set", "lo", "up")
            hosts[name] = Host(name, namespace, address)
    except NamespaceError as err:
        remove(bridge, namespaces)
        pytest.skip(f"network namespaces cannot be made here: {err}")
    try:
        yield Network(gateway, hosts)
    finally:
        remove(bridge, namespaces)


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 of SUBNETS that no interface or route here uses."""
    taken = ip("-4", "-o", "addr", "show") + ip("-4", "route", "show", "table", "all")
    for subnet in SUBNETS.subnets(new_prefix=24):
        if f"{'.'.join(str(subnet.network_address).split('.')[:3])}." not in taken:
            return subnet
    raise NamespaceError(f"every /24 of {SUBNETS} is in use")


def remove(bridge: str, namespaces: list[str]) -> None:
    for namespace in namespaces:
        with contextlib.suppress(NamespaceError, AssertionError):
            kill_everything_in(namespace)
        with contextlib.suppress(NamespaceError):
            ip("netns", "delete", namespace)  # its veth pair goes with it
    with contextlib.suppress(NamespaceError):
        ip("link", "delete", bridge)


def remove_leftovers() -> None:
    """Remove the bridges and namespaces of runs whose process is gone (killed mid-test)."""
    pattern = re.compile(rf"{NAME}(\d+)")
    dead = set()
    listed = ip("netns", "list") + ip("-o", "link", "show", "type", "bridge")
    for pid in {int(found) for found in pattern.findall(listed)}:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.add(pid)
        except PermissionError:
            pass  # alive, someone else's
    for pid in dead:
        namespaces = re.findall(rf"^({NAME}{pid}[a-z]\w*)", ip("netns", "list"), re.MULTILINE)
        remove(f"{NAME}{pid}br", namespaces)
