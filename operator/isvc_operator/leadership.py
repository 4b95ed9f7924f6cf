"""One acting operator among its replicas: leader election on a coordination.k8s.io/v1 Lease, with the rules
of client-go's (k8s.io/client-go/tools/leaderelection/leaderelection.go, resourcelock/leaselock.go), which
kube-controller-manager and kube-scheduler use.

Why a Lease and not kopf's peering: peering pauses every operator that sees a live peer of the same priority
("Pausing all operators, including self", kopf/_core/engines/peering.py), and the replicas of one Deployment
are identical, so two replicas would both pause; a dead peer's record only expires after its `lifetime`;
and it needs kopf's own CRD installed. A Lease is a built-in object, and its holder is the one replica that
acts.

- Every replica runs kopf's watches and keeps its indexes (in memory; nothing is written), so a standby is
  ready to act the moment it holds the Lease; only the holder reconciles, posts events and writes status.
- A replica takes the Lease when it has no holder, or when its record has not changed for
  `leaseDurationSeconds` on this replica's own clock (client-go's observedTime: two machines' clocks are
  never compared).
- The holder renews every `RETRY_PERIOD`. It stops acting as soon as it reads another holder, or when it
  could not renew for `RENEW_DEADLINE`, which is shorter than `LEASE_DURATION`: it has stopped before
  another replica may take over.
- Every write is an update conditioned on the resourceVersion read (a create when there is no Lease yet):
  of two replicas racing for it, one gets 409 Conflict and stays a standby.
- A holder that shuts down (SIGTERM: its pod deleted, a rollout) releases the Lease (no holder), so a standby
  takes over at its next try instead of waiting `LEASE_DURATION` out.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import kubernetes
from kubernetes.client.exceptions import ApiException

LEASE_NAME = "torch-isvc-operator"
LEASE_DURATION = 15  # seconds; client-go's and kube-controller-manager's defaults, as the next two
RENEW_DEADLINE = 10.0
RETRY_PERIOD = 2.0
REQUEST_TIMEOUT = 5.0
ELECTION_ENV = "ISVC_LEADER_ELECTION"
ELECTION_VALUES = {"true": True, "false": False}


def leader_election(environ: dict[str, str] | os._Environ[str]) -> bool:
    """Whether this replica takes part in the election (`ISVC_LEADER_ELECTION`, default true). `false` is for
    a single replica run by hand or in a test: it acts at once and writes no Lease; two replicas with `false`
    would both act. Any other value is refused, so a typo never turns the election off."""
    value = environ.get(ELECTION_ENV, "true").strip().lower()
    if value not in ELECTION_VALUES:
        raise ValueError(f"{ELECTION_ENV} must be true or false, not {environ.get(ELECTION_ENV)!r}")
    return ELECTION_VALUES[value]


@dataclass(frozen=True)
class LeaseRecord:
    """A Lease as read: its spec's fields and the resourceVersion a conditioned update names."""

    holder: str
    duration: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int
    resource_version: str


def read_record(lease: dict[str, Any] | None) -> LeaseRecord | None:
    """The record of a Lease (None: there is no Lease)."""
    if lease is None:
        return None
    spec = lease.get("spec") or {}
    return LeaseRecord(holder=spec.get("holderIdentity") or "",
                       duration=int(spec.get("leaseDurationSeconds") or LEASE_DURATION),
                       acquire_time=spec.get("acquireTime"), renew_time=spec.get("renewTime"),
                       transitions=int(spec.get("leaseTransitions") or 0),
                       resource_version=str((lease.get("metadata") or {}).get("resourceVersion", "")))


def may_take(record: LeaseRecord | None, identity: str, unchanged_for: float) -> bool:
    """Whether `identity` may write itself as the holder: no Lease, no holder, itself, or a holder whose
    record has not changed for its duration (`unchanged_for`: seconds on this replica's clock)."""
    if record is None or not record.holder or record.holder == identity:
        return True
    return unchanged_for >= record.duration


def micro_time(moment: datetime.datetime) -> str:
    """A MicroTime as the API writes it (RFC 3339, microseconds, UTC)."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def holding_spec(record: LeaseRecord | None, identity: str, moment: datetime.datetime,
                 duration: int = LEASE_DURATION) -> dict[str, Any]:
    """The spec that makes (or keeps) `identity` the holder: a renewal keeps acquireTime and the count of
    transitions; a takeover of an existing Lease sets acquireTime and counts one more transition."""
    renewing = record is not None and record.holder == identity
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": duration,
        "acquireTime": record.acquire_time if renewing and record is not None else micro_time(moment),
        "renewTime": micro_time(moment),
        "leaseTransitions": 0 if record is None else record.transitions + (0 if renewing else 1),
    }


def released_spec(record: LeaseRecord, moment: datetime.datetime) -> dict[str, Any]:
    """The spec a holder leaves when it stops: no holder, so the next try of any standby takes it."""
    return {"holderIdentity": "", "leaseDurationSeconds": 1, "acquireTime": micro_time(moment),
            "renewTime": micro_time(moment), "leaseTransitions": record.transitions}


def replica_identity() -> str:
    """The pod's name (HOSTNAME in a pod) and a random suffix, as client-go's callers make it: a restarted
    container is a new candidate, never mistaken for the holder it replaced."""
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class LeaseStore(Protocol):
    """Reads and conditioned writes of one Lease. Every call may raise `ApiException` or an OSError."""

    def get(self) -> dict[str, Any] | None: ...

    def create(self, spec: dict[str, Any]) -> dict[str, Any]: ...

    def replace(self, spec: dict[str, Any], resource_version: str) -> dict[str, Any]: ...


class LeaseApi:
    """`LeaseStore` on the kubernetes client: the Lease `name` in `namespace`."""

    def __init__(self, client: kubernetes.client.ApiClient, namespace: str, name: str = LEASE_NAME) -> None:
        self.api = kubernetes.client.CoordinationV1Api(client)
        self.namespace, self.name = namespace, name

    def get(self) -> dict[str, Any] | None:
        try:
            answer = self.api.read_namespaced_lease(self.name, self.namespace, _preload_content=False,
                                                    _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return json.loads(answer.data)

    def _body(self, spec: dict[str, Any], resource_version: str | None = None) -> dict[str, Any]:
        metadata = {"name": self.name, "namespace": self.namespace}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}

    def create(self, spec: dict[str, Any]) -> dict[str, Any]:
        answer = self.api.create_namespaced_lease(self.namespace, self._body(spec), _preload_content=False,
                                                  _request_timeout=REQUEST_TIMEOUT)
        return json.loads(answer.data)

    def replace(self, spec: dict[str, Any], resource_version: str) -> dict[str, Any]:
        answer = self.api.replace_namespaced_lease(self.name, self.namespace,
                                                   self._body(spec, resource_version),
                                                   _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        return json.loads(answer.data)


HELD, OTHER, FAILED = "held", "other", "failed"


class LeaseElector:
    """The election loop of one replica (`run`), calling `on_lead` when it becomes the holder and
    `on_standby` when it stops being one."""

    def __init__(self, store: LeaseStore, identity: str, logger: logging.Logger, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC)
                 ) -> None:
        self.store, self.identity, self.logger = store, identity, logger
        self.clock, self.wall_clock = clock, wall_clock
        self.leading = False
        self.stopped = False  # released: never takes the Lease again
        self.observed: LeaseRecord | None = None
        self.observed_at = clock()
        self.renewed_at = 0.0

    def try_take(self) -> str:
        """One try to become or stay the holder: HELD, OTHER (another replica holds it) or FAILED (the API
        did not answer, or a concurrent write won)."""
        try:
            record = read_record(self.store.get())
            if record != self.observed:
                self.observed, self.observed_at = record, self.clock()
            if self.stopped or not may_take(record, self.identity, self.clock() - self.observed_at):
                return OTHER
            spec = holding_spec(record, self.identity, self.wall_clock())
            written = self.store.create(spec) if record is None else self.store.replace(
                spec, record.resource_version)
        except ApiException as exc:
            if exc.status != 409:  # 409: another replica wrote first (create or update)
                self.logger.warning("lease %s: %s %s", LEASE_NAME, exc.status, exc.reason)
            return FAILED
        except Exception as exc:  # the apiserver unreachable, a timeout: as client-go, try again later
            self.logger.warning("lease %s: %s", LEASE_NAME, exc)
            return FAILED
        self.observed, self.observed_at = read_record(written), self.clock()
        return HELD

    def step(self, outcome: str) -> str | None:
        """The transition after a try: "lead", "standby" or None."""
        now = self.clock()
        if self.stopped:  # a try that was under way when the Lease was released
            self.leading = False
            return None
        if outcome == HELD:
            self.renewed_at = now
            if not self.leading:
                self.leading = True
                return "lead"
            return None
        if self.leading and (outcome == OTHER or now - self.renewed_at >= RENEW_DEADLINE):
            self.leading = False
            return "standby"
        return None

    async def run(self, on_lead: Callable[[], None], on_standby: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        announced = False  # that another replica holds the Lease: said once, when first seen
        while True:
            outcome = await loop.run_in_executor(None, self.try_take)
            transition = self.step(outcome)
            if transition == "lead":
                self.logger.info("leading: %s holds lease %s", self.identity, LEASE_NAME)
                on_lead()
            elif transition == "standby":
                self.logger.warning("standing by: %s lost lease %s (%s)", self.identity, LEASE_NAME, outcome)
                on_standby()
            elif outcome == OTHER and not self.leading and not announced and self.observed is not None:
                self.logger.info("standing by: %s holds lease %s", self.observed.holder, LEASE_NAME)
            announced = announced or outcome == OTHER
            await asyncio.sleep(RETRY_PERIOD)

    def release(self) -> None:
        """Give the Lease up, if this replica holds it, and take part no more (on shutdown)."""
        self.stopped = True
        if not self.leading:
            return
        self.leading = False
        try:
            record = read_record(self.store.get())
            if record is not None and record.holder == self.identity:
                self.store.replace(released_spec(record, self.wall_clock()), record.resource_version)
                self.logger.info("released lease %s", LEASE_NAME)
        except Exception as exc:  # it expires by itself after its duration
            self.logger.warning("lease %s not released: %s", LEASE_NAME, exc)
