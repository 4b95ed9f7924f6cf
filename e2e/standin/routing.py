"""The ingress's route table (pure functions over the objects listed from the apiserver).

Hosts, in order of precedence:
1. every host of an Istio VirtualService: its first HTTP route whose ``match`` fits (authority and
   URI; gateways are not checked: this one ingress plays both the external and the local gateway),
   following the ``Host`` rewrite (``headers.request.set.Host`` or ``rewrite.authority``, else the
   destination host) to a Knative host below, with the destinations' weights;
2. a Knative Service's hosts: ``status.url``'s host, ``{name}.{ns}.svc.cluster.local`` (and the shorter
   ``.svc`` / ``{name}.{ns}`` forms, as Knative's local gateway) split by ``status.traffic`` percents,
   and each tag's host (``status.traffic[].url``, else ``{tag}-{name}.{ns}.{domain}``) to its revision;
3. an InferenceService's ``status.url`` host when no VirtualService of its name exists yet: to its
   predictor's Knative Service (``status.components.predictor.url``, else ``{isvc}-predictor-default``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

MAX_HOPS = 4


@dataclass(frozen=True)
class Backend:
    namespace: str
    revision: str


Split = tuple[tuple[Backend, float], ...]  # weighted backends, weights > 0


def url_host(url: str | None) -> str | None:
    if not url:
        return None
    host = urlsplit(url if "://" in url else f"http://{url}").hostname
    return host.lower() if host else None


def normalise_host(host: str) -> str:
    """``Torchserve.NS.example.com:8080`` -> ``torchserve.ns.example.com``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def ksvc_hosts(ksvc: Mapping[str, Any], domain: str) -> dict[str, Split]:
    """A Knative Service's hosts: the route's hosts by traffic percent, each tag's host to its revision."""
    metadata, status = ksvc.get("metadata") or {}, ksvc.get("status") or {}
    name, namespace = metadata.get("name", ""), metadata.get("namespace", "")
    traffic = status.get("traffic") or []
    targets = [t for t in traffic if t.get("revisionName") and (t.get("percent") or 0) > 0]
    split = tuple((Backend(namespace, t["revisionName"]), float(t["percent"])) for t in targets)
    hosts: dict[str, Split] = {}
    if split:
        names = {url_host(status.get("url")), url_host((status.get("address") or {}).get("url")),
                 f"{name}.{namespace}.svc.cluster.local", f"{name}.{namespace}.svc", f"{name}.{namespace}",
                 f"{name}.{namespace}.{domain}"}
        for host in names:
            if host:
                hosts[host] = split
    for target in traffic:
        if target.get("tag") and target.get("revisionName"):
            host = url_host(target.get("url")) or f"{target['tag']}-{name}.{namespace}.{domain}"
            hosts[host] = ((Backend(namespace, target["revisionName"]), 100.0),)
    return hosts


@dataclass(frozen=True)
class VirtualRoute:
    """One VirtualService HTTP route: its matches and its (host, weight) destinations."""

    matches: tuple[Mapping[str, Any], ...]
    destinations: tuple[tuple[str, float], ...]


def _string_match(rule: Mapping[str, Any] | None, value: str) -> bool:
    if not rule:
        return True
    if "exact" in rule:
        return value == rule["exact"]
    if "prefix" in rule:
        return value.startswith(rule["prefix"])
    if "regex" in rule:
        return re.fullmatch(rule["regex"], value) is not None
    return True


def route_matches(route: VirtualRoute, host: str, path: str) -> bool:
    if not route.matches:
        return True
    return any(_string_match(m.get("authority"), host) and _string_match(m.get("uri"), path)
               for m in route.matches)


def virtualservice_routes(vs: Mapping[str, Any]) -> tuple[list[str], list[VirtualRoute]]:
    """(hosts, HTTP routes) of a VirtualService, with each destination's effective Host."""
    spec = vs.get("spec") or {}
    routes = []
    for http in spec.get("http") or []:
        route_host = (((http.get("headers") or {}).get("request") or {}).get("set") or {}).get("Host") \
            or (http.get("rewrite") or {}).get("authority")
        destinations = []
        targets = http.get("route") or []
        for target in targets:
            host = (((target.get("headers") or {}).get("request") or {}).get("set") or {}).get("Host") \
                or route_host or (target.get("destination") or {}).get("host")
            weight = float(target.get("weight", 100 if len(targets) == 1 else 0))
            if host and weight > 0:
                destinations.append((normalise_host(str(host)), weight))
        routes.append(VirtualRoute(tuple(http.get("match") or ()), tuple(destinations)))
    return [normalise_host(h) for h in spec.get("hosts") or []], routes


@dataclass
class RouteTable:
    domain: str = "example.com"
    knative: dict[str, Split] = field(default_factory=dict)
    virtual: dict[str, list[VirtualRoute]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # isvc URL host -> predictor host

    def resolve(self, host: str, path: str = "/", hops: int = 0) -> Split | None:
        """The weighted backends for a request, or None when no route serves this host (and path)."""
        host = normalise_host(host)
        if hops > MAX_HOPS:
            return None
        if host in self.virtual:
            route = next((r for r in self.virtual[host] if route_matches(r, host, path)), None)
            if route is None:
                return None
            combined: list[tuple[Backend, float]] = []
            total = sum(weight for _, weight in route.destinations)
            for target, weight in route.destinations:
                split = self.resolve(target, path, hops + 1) if target != host else None
                if split is None:
                    continue
                inner = sum(w for _, w in split)
                combined += [(backend, weight / total * w / inner) for backend, w in split]
            return tuple(combined) or None
        if host in self.knative:
            return self.knative[host]
        if host in self.aliases:
            return self.resolve(self.aliases[host], path, hops + 1)
        return None

    def hosts(self) -> list[str]:
        return sorted({*self.virtual, *self.knative, *self.aliases})


def build_routes(ksvcs: Iterable[Mapping[str, Any]], virtualservices: Iterable[Mapping[str, Any]],
                 isvcs: Iterable[Mapping[str, Any]], domain: str = "example.com") -> RouteTable:
    table = RouteTable(domain=domain)
    for ksvc in ksvcs:
        table.knative.update(ksvc_hosts(ksvc, domain))
    with_vs: set[tuple[str, str]] = set()
    for vs in virtualservices:
        metadata = vs.get("metadata") or {}
        with_vs.add((metadata.get("namespace", ""), metadata.get("name", "")))
        hosts, routes = virtualservice_routes(vs)
        for host in hosts:
            table.virtual.setdefault(host, []).extend(routes)
    for isvc in isvcs:
        metadata, status = isvc.get("metadata") or {}, isvc.get("status") or {}
        namespace, name = metadata.get("namespace", ""), metadata.get("name", "")
        host = url_host(status.get("url"))
        if not host or (namespace, name) in with_vs or host in table.knative or host in table.virtual:
            continue
        predictor = ((status.get("components") or {}).get("predictor") or {})
        target = url_host(predictor.get("url")) or f"{name}-predictor-default.{namespace}.svc.cluster.local"
        table.aliases[host] = target
    return table


def pick(split: Sequence[tuple[Backend, float]], rng: random.Random | None = None) -> Backend:
    """One backend, chosen at random in proportion to the weights (as Envoy's weighted clusters)."""
    backends = [b for b, _ in split]
    weights = [w for _, w in split]
    return (rng or random).choices(backends, weights=weights, k=1)[0]
