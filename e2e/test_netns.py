"""The tests' own network namespaces: reachable through their veth, closed to the outside, gone after."""

from __future__ import annotations

import http.server
import ipaddress
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from e2e import netns

_SERVE_ONE_REQUEST = (
    "import http.server, sys\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        self.send_response(200); self.end_headers(); self.wfile.write(b'inside')\n"
    "    def log_message(self, *a): pass\n"
    "http.server.HTTPServer((sys.argv[1], 18080), H).handle_request()\n"
)
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, timeout: float = 5.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with _NO_PROXY.open(url, timeout=1) as answer:
                return answer.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_link_addresses_are_in_the_network_test_range() -> None:
    with netns.network_namespace("probe") as ns:
        assert ns.host_address.network == ns.address.network
        assert ns.address.network.subnet_of(netns.LINK_RANGE)
        assert netns.LINK_RANGE.subnet_of(netns.NETWORK_TEST_RANGE)
        assert netns.CLUSTER_RANGE.subnet_of(netns.NETWORK_TEST_RANGE)
        assert not netns.LINK_RANGE.overlaps(netns.CLUSTER_RANGE)


def test_free_link_subnet_skips_subnets_with_an_address_in_use() -> None:
    first = next(netns.LINK_RANGE.subnets(new_prefix=30))
    taken = {first.network_address + 2}
    chosen = netns.free_link_subnet(taken, token=0)
    assert chosen != first and chosen.subnet_of(netns.LINK_RANGE)


def test_host_reaches_a_server_inside_and_the_inside_reaches_the_host() -> None:
    with netns.network_namespace("probe") as ns:
        serve = [sys.executable, "-c", _SERVE_ONE_REQUEST, str(ns.address.ip)]
        server = subprocess.Popen(ns.exec_argv(serve))
        try:
            assert _get(f"http://{ns.address.ip}:18080/") == b"inside"
        finally:
            server.wait(timeout=10)

        class Hello(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"host")

            def log_message(self, *args: object) -> None:
                pass

        host_server = http.server.HTTPServer((str(ns.host_address.ip), 0), Hello)
        threading.Thread(target=host_server.handle_request, daemon=True).start()
        url = f"http://{ns.host_address.ip}:{host_server.server_port}/"
        no_proxy = "urllib.request.build_opener(urllib.request.ProxyHandler(dict()))"
        fetch = f"import urllib.request; print({no_proxy}.open({url!r}).read())"
        inside = ns.run([sys.executable, "-c", fetch], timeout=10)
        host_server.server_close()
        assert inside.stdout.strip() == "b'host'", inside.stderr


def test_without_a_default_route_nothing_outside_the_link_is_reachable_from_inside() -> None:
    with netns.network_namespace("probe") as ns:
        route = ns.run(["ip", "route", "get", "192.0.2.1"])
        assert route.returncode != 0 and "unreachable" in route.stderr


def test_default_route_goes_to_the_host_which_forwards_nothing_off_the_machine() -> None:
    with netns.network_namespace("probe", default_route=True) as ns:
        inside = ns.run(["ip", "route", "get", "192.0.2.1"])
        assert inside.returncode == 0 and f"via {ns.host_address.ip}" in inside.stdout
        # How the host would route a packet arriving from the namespace (nothing is sent): the rule's
        # "unreachable" route answers EHOSTUNREACH, whatever the host's forwarding setting.
        host = _host_route(ns, "192.0.2.1")
        assert host.returncode != 0 and "no route to host" in host.stderr.lower(), host.stderr
        # ...while the host's own address on the link is still delivered locally.
        local = _host_route(ns, str(ns.host_address.ip))
        assert local.returncode == 0 and local.stdout.startswith("local"), local.stderr


def _host_route(ns: netns.NetworkNamespace, destination: str) -> subprocess.CompletedProcess[str]:
    argv = ["ip", "route", "get", destination, "from", str(ns.address.ip), "iif", ns.host_interface]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("default_route", [False, True])
def test_delete_leaves_nothing_behind(default_route: bool) -> None:
    before = set(netns.leftovers())
    ns = netns.create("probe", default_route=default_route)
    during = set(netns.leftovers()) - before
    assert ns.name in during and ns.host_interface in during
    netns.delete(ns)
    netns.delete(ns)  # idempotent
    assert set(netns.leftovers()) - before == set()
    assert ipaddress.IPv4Address(ns.address.ip) not in netns.addresses_in_use()
