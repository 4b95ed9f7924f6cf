"""Network namespaces the tests make for themselves, each joined to the host by one veth pair.

A real kubelet's node (as kind makes a node a container) and Knative's admission webhook run in such
namespaces: the apiserver refuses loopback endpoints, and a node needs interfaces of its own. Addresses come
from 198.18.0.0/15, the range set aside for network testing (RFC 2544):

- ``LINK_RANGE`` (198.18.0.0/16) is cut into /30s, one per veth pair: ``.1`` on the host, ``.2`` inside;
- ``CLUSTER_RANGE`` (198.19.0.0/16) is left for what runs inside a namespace (pod and Service ranges).

Nothing is routed off the machine. A namespace has no default route unless it asks for one; when it does,
the host answers every packet that arrives from its veth for an address that is not the host's own with
"unreachable" (a policy-routing rule on the host end, so this holds whatever the host's forwarding says).
``delete`` removes the namespace, the veth pair and that rule; ``leftovers`` lists what a crash left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import secrets
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

NETWORK_TEST_RANGE = IPv4Network("198.18.0.0/15")
LINK_RANGE = IPv4Network("198.18.0.0/16")
CLUSTER_RANGE = IPv4Network("198.19.0.0/16")
NAME_PREFIX = "tisvc-"
_INTERFACE_PREFIX = "tv"
_RULE_PRIORITY = 1918
_LOCK = Path("/run/torch-isvc-netns.lock")


class NetnsError(RuntimeError):
    """A namespace or its link could not be made (the message carries the failing command and its stderr)."""


@dataclass(frozen=True)
class NetworkNamespace:
    """One namespace and its veth pair: ``host_interface``/``host_address`` on the host, ``interface``/
    ``address`` inside. ``table`` is the routing table of the host-side "unreachable" rule (0: none)."""

    name: str
    host_interface: str
    interface: str
    host_address: IPv4Interface
    address: IPv4Interface
    table: int = 0

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace (network only; the filesystem and PIDs stay the host's)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.exec_argv(argv), capture_output=True, text=True, check=False, **kwargs)


def _ip(*args: str, namespace: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ip", *(["-n", namespace] if namespace else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done


def addresses_in_use() -> set[ipaddress.IPv4Address]:
    """Every IPv4 address configured on the host's interfaces."""
    links = json.loads(_ip("-j", "-4", "addr").stdout or "[]")
    return {ipaddress.IPv4Address(info["local"]) for link in links for info in link.get("addr_info", [])}


def free_link_subnet(in_use: set[ipaddress.IPv4Address], token: int) -> IPv4Network:
    """A /30 of ``LINK_RANGE`` none of whose addresses is in use, starting from a place chosen by ``token``
    (so that concurrent test runs rarely try the same one first)."""
    subnets = list(LINK_RANGE.subnets(new_prefix=30))
    start = token % len(subnets)
    for subnet in subnets[start:] + subnets[:start]:
        if not any(address in subnet for address in in_use):
            return subnet
    raise NetnsError(f"no free /30 left in {LINK_RANGE}")


@contextlib.contextmanager
def _allocation_lock() -> Iterator[None]:
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def create(label: str, *, default_route: bool = False) -> NetworkNamespace:
    """A new namespace ``tisvc-{label}-{token}`` with loopback up and one veth pair to the host.

    With ``default_route`` the namespace routes everything to the host end of its veth (a kubelet finds its
    node address that way); the host then answers "unreachable" for anything that is not its own address.
    On failure everything made so far is removed again."""
    token = secrets.token_hex(3)
    ns = NetworkNamespace(
        name=f"{NAME_PREFIX}{label}-{token}",
        host_interface=f"{_INTERFACE_PREFIX}{token}h",
        interface=f"{_INTERFACE_PREFIX}{token}n",
        host_address=IPv4Interface("0.0.0.0/30"),
        address=IPv4Interface("0.0.0.0/30"),
        table=(10_000 + int(token, 16) % 50_000) if default_route else 0,
    )
    try:
        with _allocation_lock():
            subnet = free_link_subnet(addresses_in_use(), int(token, 16))
            host_address, address = (IPv4Interface(f"{host}/30") for host in list(subnet.hosts())[:2])
            ns = NetworkNamespace(ns.name, ns.host_interface, ns.interface, host_address, address, ns.table)
            _ip("netns", "add", ns.name)
            _ip("link", "add", ns.host_interface, "type", "veth", "peer", "name", ns.interface)
            _ip("addr", "add", str(ns.host_address), "dev", ns.host_interface)
        _ip("link", "set", ns.interface, "netns", ns.name)
        _ip("link", "set", ns.host_interface, "up")
        _ip("link", "set", "lo", "up", namespace=ns.name)
        _ip("addr", "add", str(ns.address), "dev", ns.interface, namespace=ns.name)
        _ip("link", "set", ns.interface, "up", namespace=ns.name)
        if default_route:
            table = str(ns.table)
            _ip("route", "add", "unreachable", "default", "table", table)
            _ip("rule", "add", "iif", ns.host_interface, "lookup", table, "priority", str(_RULE_PRIORITY))
            _ip("route", "add", "default", "via", str(ns.host_address.ip), namespace=ns.name)
    except BaseException:
        delete(ns)
        raise
    return ns


def delete(ns: NetworkNamespace) -> None:
    """Remove the namespace, its veth pair and its host rule; idempotent, never raises for what is gone."""
    if ns.table:
        _ip("rule", "del", "iif", ns.host_interface, "lookup", str(ns.table), check=False)
        _ip("route", "flush", "table", str(ns.table), check=False)
    _ip("link", "del", ns.host_interface, check=False)  # deletes its peer too, wherever that is
    _ip("netns", "del", ns.name, check=False)


@contextlib.contextmanager
def network_namespace(label: str, *, default_route: bool = False) -> Iterator[NetworkNamespace]:
    ns = create(label, default_route=default_route)
    try:
        yield ns
    finally:
        delete(ns)


def leftovers() -> list[str]:
    """Namespaces, links and rules of ours still on the host (a clean run leaves none)."""
    found = [name for name in _ip("netns", "list").stdout.split() if name.startswith(NAME_PREFIX)]
    for link in json.loads(_ip("-j", "link").stdout or "[]"):
        name = link.get("ifname", "")
        if name.startswith(_INTERFACE_PREFIX) and name.endswith(("h", "n")) and len(name) == 9:
            found.append(name)
    found += [line for line in _ip("rule").stdout.splitlines() if line.startswith(f"{_RULE_PRIORITY}:")]
    return found
