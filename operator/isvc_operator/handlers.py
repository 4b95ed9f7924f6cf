"""The kopf layer: indexes of what the operator follows, and the watch events that call `reconcile`.

kopf's watches keep one index per kind (`@kopf.index`, in memory, nothing written to the cluster), fully
populated before any handler runs: InferenceServices, their Knative Services and VirtualServices (raw
deployment mode: their Deployments, Services, HorizontalPodAutoscalers, and a summary of each Pod),
ServiceAccounts (only the names of the Secrets they list) and the operator's own ConfigMap (watched through
a server-side field selector: its name and namespace). Each event handler decides which isvcs an event
concerns and runs `reconcile` (reconcile.py) for them in kopf's executor.

Only event-watching handlers and indexes are used: kopf keeps no progress state in annotations or status,
so the operator never writes to an InferenceService except its status, and a restart writes nothing to
unchanged objects. For the same reason the retries are not kopf's own (a handler's retry, a timer or a
daemon would put kopf's state or a finalizer on the isvc): `reconcile` raises `kopf.TemporaryError`, and
the next attempt is an asyncio task on kopf's loop that waits for the error's delay, one per isvc. A
resync task reconciles every known isvc every `RESYNC_SECONDS` (an unchanged one writes nothing).

Of several replicas only the holder of the operator's Lease acts (leadership.py): every replica watches and
indexes, the others reconcile nothing and post nothing until they hold it; the new holder then reconciles
every isvc once (an unchanged one writes nothing). The election starts once kopf's indexes are complete.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import kopf

from .config import CONFIGMAP_NAME, DEFAULT_NAMESPACE, OperatorConfig
from .credentials import referenced_secrets
from .ingress import ISTIO_GROUP, ISTIO_PLURAL, ISTIO_VERSION
from .known import (
    DEPLOYMENT,
    HPA,
    INFERENCE_SERVICE,
    KNATIVE_SERVICE,
    SERVICE,
    VIRTUAL_SERVICE,
    Indexes,
    Key,
    Known,
    PodSummary,
    ServiceAccountSecrets,
    owner_of,
)
from .kube import Kube, KubeApi, api_client
from .leadership import ELECTION_ENV, LeaseApi, LeaseElector, leader_election, replica_identity
from .metrics import metrics_address, serve
from .naming import (
    GROUP,
    ISVC_LABEL,
    KNATIVE_GROUP,
    KNATIVE_PLURAL,
    KNATIVE_VERSION,
    PLURAL,
    VERSION,
)
from .reconcile import post, reconcile
from .status import pod_failure

NAMESPACE_ENV = "ISVC_OPERATOR_NAMESPACE"
LOG_LEVEL_ENV = "ISVC_OPERATOR_LOG_LEVEL"  # e.g. DEBUG: also log reconciles that changed nothing
RESYNC_SECONDS = 600.0
CONFIGMAPS = ("", "v1", "configmaps")
SERVICEACCOUNTS = ("", "v1", "serviceaccounts")
DEPLOYMENTS = ("apps", "v1", "deployments")
SERVICES = ("", "v1", "services")
HPAS = ("autoscaling", "v2", "horizontalpodautoscalers")
PODS = ("", "v1", "pods")
PREDICTOR_LABELS = {ISVC_LABEL: kopf.PRESENT}


def operator_namespace() -> str:
    return os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE


@dataclass
class Operator:
    """What the handlers share (kopf's operator memo): what is known, the API, the pending retries."""

    known: Known
    kube: Kube
    executor: Executor | None
    logger: logging.Logger
    retries: dict[Key, asyncio.Task[None]] = field(default_factory=dict)
    background: set[asyncio.Task[None]] = field(default_factory=set)
    announced: OperatorConfig | None = None  # the config last announced (events, re-render of all)
    elector: LeaseElector | None = None  # None: this replica acts alone (always leading)
    indexed: asyncio.Event = field(default_factory=asyncio.Event)  # kopf's indexes are complete

    @property
    def leading(self) -> bool:
        return self.elector is None or self.elector.leading

    async def reconcile(self, key: Key) -> None:
        """Run `reconcile` for `key` now (a pending retry is superseded); on a TemporaryError, again after
        its delay. Nothing while another replica holds the Lease."""
        if not self.leading:
            return
        pending = self.retries.pop(key, None)
        if pending is not None and pending is not asyncio.current_task():
            pending.cancel()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.executor, reconcile, key, self.known, self.kube, self.logger)
        except kopf.TemporaryError as error:
            self.retries[key] = asyncio.create_task(self._retry(key, error.delay or 0.0))

    async def _retry(self, key: Key, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.retries.get(key) is asyncio.current_task():
            del self.retries[key]
            await self.reconcile(key)

    async def reconcile_all(self) -> None:
        keys = [(isvc["metadata"]["namespace"], isvc["metadata"]["name"])
                for isvc in self.known.inference_services()]
        await asyncio.gather(*(self.reconcile(key) for key in keys))

    async def resync(self) -> None:
        while True:
            await asyncio.sleep(RESYNC_SECONDS)
            await self.reconcile_all()

    async def elect(self) -> None:
        """Take part in the election once every index is complete (a new holder reconciles all at once)."""
        await self.indexed.wait()
        assert self.elector is not None
        await self.elector.run(self.lead, self.stand_by)

    def lead(self) -> None:
        self.start_background(self.reconcile_all())

    def stand_by(self) -> None:
        for task in list(self.retries.values()):
            task.cancel()
        self.retries.clear()

    def start_background(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def forget(self, key: Key) -> None:
        """The isvc is gone: its pending retry and everything remembered about it."""
        pending = self.retries.pop(key, None)
        if pending is not None:
            pending.cancel()
        self.known.forget(INFERENCE_SERVICE, key)

    def stop(self) -> None:
        for task in [*self.retries.values(), *self.background]:
            task.cancel()


@kopf.on.startup()
async def start_operator(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger,
                         inferenceservices: kopf.Index, predictor_services: kopf.Index,
                         virtual_services: kopf.Index, service_accounts: kopf.Index,
                         operator_config_maps: kopf.Index, predictor_deployments: kopf.Index,
                         predictor_k8s_services: kopf.Index, predictor_hpas: kopf.Index,
                         predictor_pods: kopf.Index, **_: Any) -> None:
    settings.peering.standalone = True
    settings.posting.enabled = False  # events are posted by the reconciler, about what matters
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.execution.max_workers = 8
    namespace = operator_namespace()
    # The Role grants the one ConfigMap by name: watch only it, server-side.
    settings.watching.field_selectors[CONFIGMAPS] = \
        f"metadata.name={CONFIGMAP_NAME},metadata.namespace={namespace}"
    operator_logger = logging.getLogger("isvc_operator")
    operator_logger.setLevel(os.environ.get(LOG_LEVEL_ENV, "INFO").upper())
    if operator_logger.level > logging.DEBUG:  # kopf logs every handled watch event at INFO
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # The API client logs response bodies at DEBUG, and the operator reads Secrets: never at DEBUG.
    logging.getLogger("kubernetes.client.rest").setLevel(logging.INFO)
    indexes = Indexes(inferenceservices, predictor_services, virtual_services, service_accounts,
                      operator_config_maps, predictor_deployments, predictor_k8s_services, predictor_hpas,
                      predictor_pods)
    client = api_client()
    elect = memo.get("leader_election")
    if elect is None:  # run by `kopf run -m isvc_operator`: only the environment says
        try:
            elect = leader_election(os.environ)
        except ValueError as error:
            raise kopf.PermanentError(str(error)) from None
    elector = (LeaseElector(LeaseApi(client, namespace), replica_identity(), operator_logger)
               if elect else None)
    operator = Operator(Known(indexes, namespace), KubeApi(client), settings.execution.executor,
                        operator_logger, elector=elector)
    memo.operator = operator
    operator.start_background(operator.resync())
    if elector is None:  # it acts on every event from the start, the initial listing included
        logger.warning("leader election off (%s=false): this replica acts alone", ELECTION_ENV)
    else:
        operator.start_background(operator.elect())
    serve(operator.known.inference_services, *metrics_address(os.environ))
    logger.info("watching ConfigMap %s/%s", namespace, CONFIGMAP_NAME)


@kopf.on.cleanup()
async def stop_operator(memo: kopf.Memo, **_: Any) -> None:
    operator: Operator | None = memo.get("operator")
    if operator is not None:
        operator.stop()
        if operator.elector is not None:  # a standby takes over at its next try, not after the Lease expires
            await asyncio.get_running_loop().run_in_executor(None, operator.elector.release)


@kopf.on.probe(id="leading")
def report_leadership(memo: kopf.Memo, **_: Any) -> str:
    """In the health endpoint's answer: whether this replica acts, or stands by (both are healthy)."""
    operator: Operator | None = memo.get("operator")
    if operator is None or operator.elector is None:
        return "alone"
    return f"{operator.elector.identity}: {'leading' if operator.leading else 'standing by'}"


# --- indexes ----------------------------------------------------------------------------------


@kopf.index(GROUP, VERSION, PLURAL)
def inferenceservices(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(namespace, name): dict(body)}


@kopf.index(KNATIVE_GROUP, KNATIVE_VERSION, KNATIVE_PLURAL, labels={ISVC_LABEL: kopf.PRESENT})
def predictor_services(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(namespace, name): dict(body)}


@kopf.index(ISTIO_GROUP, ISTIO_VERSION, ISTIO_PLURAL, labels={ISVC_LABEL: kopf.PRESENT})
def virtual_services(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(namespace, name): dict(body)}


@kopf.index(*DEPLOYMENTS, labels=PREDICTOR_LABELS)
def predictor_deployments(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(namespace, name): dict(body)}


@kopf.index(*SERVICES, labels=PREDICTOR_LABELS)
def predictor_k8s_services(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(namespace, name): dict(body)}


@kopf.index(*HPAS, labels=PREDICTOR_LABELS)
def predictor_hpas(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(namespace, name): dict(body)}


@kopf.index(*PODS, labels=PREDICTOR_LABELS)
def predictor_pods(namespace: str, name: str, body: kopf.Body, labels: kopf.Labels,
                   **_: Any) -> dict[Key, PodSummary]:
    """Per isvc, each of its pods' name and failed container (with its termination message), no more."""
    return {(namespace, labels[ISVC_LABEL]): PodSummary(name, pod_failure(dict(body)))}


@kopf.index(*SERVICEACCOUNTS)
def service_accounts(namespace: str, name: str, body: kopf.Body, meta: kopf.Meta,
                     **_: Any) -> dict[Key, ServiceAccountSecrets]:
    """Only the names of the Secrets it lists matter (storage credentials of the predictors running as it)."""
    return {(namespace, name): ServiceAccountSecrets(meta.get("resourceVersion"),
                                                     tuple(referenced_secrets(dict(body))))}


def _is_operator_config(namespace: str, name: str, **_: Any) -> bool:
    return namespace == operator_namespace() and name == CONFIGMAP_NAME


@kopf.index(*CONFIGMAPS, when=_is_operator_config)
def operator_config_maps(namespace: str, name: str, body: kopf.Body, meta: kopf.Meta,
                         **_: Any) -> dict[Key, dict[str, Any]]:
    return {(namespace, name): {"data": dict(body.get("data") or {}), "uid": meta.get("uid", "")}}


# --- watch events -----------------------------------------------------------------------------


@kopf.on.event(GROUP, VERSION, PLURAL)
async def reconcile_predictor(event: dict[str, Any], namespace: str, name: str, memo: kopf.Memo,
                              **_: Any) -> None:
    operator: Operator = memo.operator
    operator.indexed.set()  # kopf calls no handler before every index is complete
    if event.get("type") == "DELETED":
        operator.forget((namespace, name))
        return
    await operator.reconcile((namespace, name))


@kopf.on.event(KNATIVE_GROUP, KNATIVE_VERSION, KNATIVE_PLURAL, labels={ISVC_LABEL: kopf.PRESENT})
async def on_ksvc_status(event: dict[str, Any], namespace: str, name: str, labels: kopf.Labels,
                         memo: kopf.Memo, **_: Any) -> None:
    await _owned_object_event(memo.operator, KNATIVE_SERVICE, event, namespace, name, labels)


@kopf.on.event(ISTIO_GROUP, ISTIO_VERSION, ISTIO_PLURAL, labels={ISVC_LABEL: kopf.PRESENT})
async def on_virtual_service(event: dict[str, Any], namespace: str, name: str, labels: kopf.Labels,
                             memo: kopf.Memo, **_: Any) -> None:
    await _owned_object_event(memo.operator, VIRTUAL_SERVICE, event, namespace, name, labels)


@kopf.on.event(*DEPLOYMENTS, labels=PREDICTOR_LABELS)
async def on_deployment_status(event: dict[str, Any], namespace: str, name: str, labels: kopf.Labels,
                               memo: kopf.Memo, **_: Any) -> None:
    await _owned_object_event(memo.operator, DEPLOYMENT, event, namespace, name, labels)


@kopf.on.event(*SERVICES, labels=PREDICTOR_LABELS)
async def on_predictor_service(event: dict[str, Any], namespace: str, name: str, labels: kopf.Labels,
                               memo: kopf.Memo, **_: Any) -> None:
    await _owned_object_event(memo.operator, SERVICE, event, namespace, name, labels)


@kopf.on.event(*HPAS, labels=PREDICTOR_LABELS)
async def on_hpa(event: dict[str, Any], namespace: str, name: str, labels: kopf.Labels, memo: kopf.Memo,
                 **_: Any) -> None:
    await _owned_object_event(memo.operator, HPA, event, namespace, name, labels)


@kopf.on.event(*PODS, labels=PREDICTOR_LABELS)
async def on_predictor_pod(event: dict[str, Any], namespace: str, labels: kopf.Labels, memo: kopf.Memo,
                           **_: Any) -> None:
    """A predictor pod changed (e.g. its storage initializer failed) or went: reconcile its isvc."""
    operator: Operator = memo.operator
    owner = (namespace, labels[ISVC_LABEL])
    if event.get("type") is not None and operator.known.inference_service(owner) is not None:
        await operator.reconcile(owner)


async def _owned_object_event(operator: Operator, kind: str, event: dict[str, Any], namespace: str,
                              name: str, labels: kopf.Labels) -> None:
    """A ksvc or VirtualService of an isvc changed or went: reconcile the isvc. Not for the initial
    listing: each isvc's own listing event reconciles it, with every index already complete."""
    if event.get("type") is None:
        return
    if event.get("type") == "DELETED":
        operator.known.forget(kind, (namespace, name))
    owner = owner_of(kind, namespace, name, labels)
    if owner is not None and operator.known.inference_service(owner) is not None:
        await operator.reconcile(owner)


@kopf.on.event(*SERVICEACCOUNTS)
async def on_service_account(event: dict[str, Any], namespace: str, name: str, memo: kopf.Memo,
                             **_: Any) -> None:
    """A ServiceAccount appeared, changed or went: re-render the isvcs whose predictor runs as it. Its
    initial listing (a cluster always has ServiceAccounts, the operator's own among them) tells that kopf's
    indexes are complete: kopf calls no handler before."""
    operator: Operator = memo.operator
    operator.indexed.set()
    if event.get("type") is None:
        return
    await asyncio.gather(*(operator.reconcile(key) for key in operator.known.users_of((namespace, name))))


@kopf.on.event(*CONFIGMAPS, when=_is_operator_config)
async def on_config_change(event: dict[str, Any], namespace: str, name: str, meta: kopf.Meta,
                           memo: kopf.Memo, **_: Any) -> None:
    """The ConfigMap changed: announce its problems once (an event on it) and re-render every isvc."""
    operator: Operator = memo.operator
    config, previous = operator.known.config, operator.announced
    operator.announced = config
    if previous is not None and config == previous and config.problems == previous.problems:
        return
    problems = "; ".join(config.problems)
    if config.problems and event.get("type") != "DELETED" and operator.leading:
        involved = {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": namespace, "uid": meta.get("uid", "")}}
        await asyncio.get_running_loop().run_in_executor(
            operator.executor, post, operator.kube, operator.logger, involved, "Warning", "InvalidConfig",
            problems)
    if config.problems:
        operator.logger.warning("%s: %s", CONFIGMAP_NAME, problems)
    if event.get("type") is not None:  # at the initial listing, each isvc's own event renders it
        await operator.reconcile_all()
