"""One reconcile of one InferenceService: bring its Knative Service, VirtualService and status in line.

`reconcile(key, known, kube, logger)` reads what is known (known.py: kopf's indexes and our own writes),
computes with the pure functions (render, traffic, status, ingress) and writes through the `Kube` protocol
only what differs:

- a promotion (a new rolled-out revision) is written to the status before any traffic that names it;
- the ksvc is applied unless this process already applied the same desired object to its current
  generation (after a restart: applied once more, which the apiserver turns into no write);
- the VirtualService (ingress mode istio) once the predictor is ready, removed in mode none;
- in raw deployment mode (raw.py) instead of the ksvc: the Deployment, Service and HPA, each applied
  the same way (an HPA no longer wanted is deleted), and the status from the Deployment and its Pods;
- the other mode's objects (owned by this isvc) are deleted, so switching modes leaves nothing behind;
- the status only when it differs from the stored one; events only for what matters (Ready transitions,
  render errors, a missing ConfigMap, the first failure in a row).

An API error (409 conflict, 410, 429, 5xx, anything the apiserver answers) or a bug leaves every write done
so far in place and raises `kopf.TemporaryError` with the delay after which the next attempt is due; the
next attempt reads everything afresh, so nothing is lost.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from .config import CONFIGMAP_NAME
from .credentials import StorageCredentials, service_account_name, storage_credentials
from .ingress import external_host, ingress_condition, ingress_urls, render_virtual_service
from .known import (
    DEPLOYMENT,
    INFERENCE_SERVICE,
    KNATIVE_SERVICE,
    RAW_KINDS,
    VIRTUAL_SERVICE,
    Key,
    Known,
    key_of,
)
from .kube import Kube, now
from .metrics import observe_reconcile
from .naming import predictor_service_name
from .raw import deployment_mode, is_raw, render_raw
from .render import RenderError, render_knative_service
from .status import (
    predictor_condition,
    propagate_status,
    raw_predictor_component,
    raw_predictor_condition,
    ready_transition,
)
from .traffic import Rollout, rolled_out, stored_rollout

RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)  # by failures in a row


def reconcile(key: Key, known: Known, kube: Kube, logger: logging.Logger) -> str:
    """Reconcile the isvc `key`; the result for the metrics ("changed", "unchanged", "render_error",
    "gone"). Raises `kopf.TemporaryError` when it failed and is to be retried."""
    with known.lock(key):
        isvc = known.inference_service(key)
        if isvc is None:
            return "gone"
        started, result = time.perf_counter(), "error"
        try:
            result = _reconcile(isvc, known, kube, logger)
        except ApiException as exc:
            result = "api_error"
            raise _retry_later(isvc, known, kube, logger, f"API error {exc.status} {exc.reason}") from exc
        except Exception as exc:  # a bug must not stop the other isvcs: report and retry
            logger.exception("reconciling %s/%s failed", *key)
            raise _retry_later(isvc, known, kube, logger, f"{type(exc).__name__}: {exc}") from exc
        finally:
            if result != "gone":
                observe_reconcile(result, time.perf_counter() - started)
        known.failures.pop(key, None)
        return result


def _reconcile(isvc: dict[str, Any], known: Known, kube: Kube, logger: logging.Logger) -> str:
    key = key_of(isvc)
    namespace, name = key
    _warn_config_problems(isvc, known, kube, logger)
    config = known.config
    if is_raw(isvc, config):
        return _reconcile_raw(isvc, known, kube, logger)
    removed = _remove_owned(isvc, RAW_KINDS, known, kube)
    live = known.knative_service((namespace, predictor_service_name(name)))
    old_status = isvc.get("status") or {}
    rollout = rolled_out(old_status, live)
    render_error = None
    try:
        deployment_mode(isvc, config)  # an annotation naming no mode is reported, not taken as Serverless
        credentials = _storage_credentials(namespace, isvc, known, kube)
        desired = render_knative_service(isvc, config, live=live, credentials=credentials, rollout=rollout)
    except RenderError as exc:
        desired, render_error = None, str(exc)
    status_written = False
    if rollout != stored_rollout(old_status):
        # A promotion is persisted before any traffic that names the new rolled-out revision.
        status = _status(isvc, live, render_error, rollout, known, kube)[0]
        _write_status(isvc, old_status, status, render_error, known, kube, logger)
        old_status, status_written = status, True
    applied = desired is not None and not _already_applied(known, KNATIVE_SERVICE, key, desired, live)
    if desired is not None and applied:
        before = None if live is None else live["metadata"].get("resourceVersion")
        live = kube.apply_knative_service(desired)
        applied = live["metadata"].get("resourceVersion") != before
        known.wrote(KNATIVE_SERVICE, live)
        known.applied[(KNATIVE_SERVICE, key)] = (desired, _object_version(live))
    status, ingress_written = _status(isvc, live, render_error, rollout, known, kube, reconcile_ingress=True)
    if status != old_status:
        _write_status(isvc, old_status, status, render_error, known, kube, logger)
        status_written = True
    if applied or status_written or ingress_written or removed:
        logger.info("reconciled %s/%s: ksvc %s, virtualservice %s, status %s%s", namespace, name,
                    _written(applied), _written(ingress_written), _written(status_written),
                    ", raw-mode objects deleted" if removed else "")
        return "render_error" if render_error is not None else "changed"
    logger.debug("reconciled %s/%s: no changes", namespace, name)
    return "render_error" if render_error is not None else "unchanged"


def _reconcile_raw(isvc: dict[str, Any], known: Known, kube: Kube, logger: logging.Logger) -> str:
    """Raw deployment mode: Deployment, Service and HPA instead of the ksvc (which is deleted)."""
    key = key_of(isvc)
    namespace, name = key
    predictor_key = (namespace, predictor_service_name(name))
    old_status = isvc.get("status") or {}
    render_error = None
    try:
        credentials = _storage_credentials(namespace, isvc, known, kube)
        desired = render_raw(isvc, known.config, credentials=credentials)
    except RenderError as exc:
        desired, render_error = None, str(exc)
    written = _remove_owned(isvc, (KNATIVE_SERVICE,), known, kube)
    if desired is not None:
        for kind in RAW_KINDS:
            body = desired[kind]
            if body is None:
                written = _remove_owned(isvc, (kind,), known, kube) or written
            else:
                written = _apply_predictor_object(kind, body, predictor_key, known, kube) or written
    status, ingress_written = _status(isvc, None, render_error, stored_rollout(old_status), known, kube,
                                      reconcile_ingress=True, raw=True)
    status_written = status != old_status
    if status_written:
        _write_status(isvc, old_status, status, render_error, known, kube, logger)
    if written or status_written or ingress_written:
        logger.info("reconciled %s/%s (raw): deployment/service/hpa %s, virtualservice %s, status %s",
                    namespace, name, _written(written), _written(ingress_written), _written(status_written))
        return "render_error" if render_error is not None else "changed"
    logger.debug("reconciled %s/%s (raw): no changes", namespace, name)
    return "render_error" if render_error is not None else "unchanged"


def _apply_predictor_object(kind: str, desired: dict[str, Any], key: Key, known: Known, kube: Kube) -> bool:
    """Server-side apply unless this process applied the same object to its current version; whether the
    apiserver stored a change."""
    live = known.predictor_object(kind, key)
    if _already_applied(known, kind, key, desired, live):
        return False
    before = None if live is None else live["metadata"].get("resourceVersion")
    live = kube.apply_raw_object(kind, desired)
    known.wrote(kind, live)
    known.applied[(kind, key)] = (desired, _object_version(live))
    return live["metadata"].get("resourceVersion") != before


def _remove_owned(isvc: dict[str, Any], kinds: tuple[str, ...], known: Known, kube: Kube) -> bool:
    """Delete the predictor objects of these kinds that this isvc owns (the other mode's, or an HPA no
    longer wanted); whether any was."""
    namespace, name = key_of(isvc)
    key = (namespace, predictor_service_name(name))
    uid = isvc["metadata"].get("uid")
    removed = False
    for kind in kinds:
        live = known.predictor_object(kind, key)
        owners = [] if live is None else live["metadata"].get("ownerReferences") or []
        if any(ref.get("uid") == uid for ref in owners):
            kube.delete_predictor_object(kind, *key)
            known.forget(kind, key)
            removed = True
    return removed


def _written(flag: bool) -> str:
    return "written" if flag else "unchanged"


def _already_applied(known: Known, kind: str, key: Key, desired: dict[str, Any],
                     live: dict[str, Any] | None) -> bool:
    """This process applied `desired` and the object is still at the generation that apply gave it."""
    applied = known.applied.get((kind, key))
    return live is not None and applied == (desired, _object_version(live))


def _object_version(live: dict[str, Any]) -> Any:
    """Its generation (bumped by spec changes only); a Service has none: its resourceVersion."""
    metadata = live["metadata"]
    generation = metadata.get("generation")
    return generation if generation is not None else metadata.get("resourceVersion")


def _write_status(isvc: dict[str, Any], old: dict[str, Any], status: dict[str, Any], render_error: str | None,
                  known: Known, kube: Kube, logger: logging.Logger) -> None:
    namespace, name = key_of(isvc)
    written = kube.apply_status(namespace, name, status)
    if not (written.get("metadata") or {}).get("resourceVersion"):
        written = {**isvc, "status": written.get("status", status)}
    known.wrote(INFERENCE_SERVICE, written)
    _post_transitions(isvc, old, status, render_error, kube, logger)


def _status(isvc: dict[str, Any], live: dict[str, Any] | None, render_error: str | None, rollout: Rollout,
            known: Known, kube: Kube, reconcile_ingress: bool = False,
            raw: bool = False) -> tuple[dict[str, Any], bool]:
    """The isvc's status; with `reconcile_ingress`, the VirtualService is brought in line first. `raw`:
    the predictor is the Deployment (its Pods' failures) and the Service, not the ksvc `live`."""
    config = known.config
    namespace, name = key_of(isvc)
    service_host = f"{predictor_service_name(name)}.{namespace}.svc.cluster.local"
    if raw:
        deployment = known.predictor_object(DEPLOYMENT, (namespace, predictor_service_name(name)))
        predictor = raw_predictor_condition(deployment, known.pod_failures((namespace, name)), render_error)
        component: dict[str, Any] | None = raw_predictor_component(service_host, deployment)
    else:
        predictor, component = predictor_condition(live, render_error), None
    if config.ingress.mode != "istio":
        written = _remove_virtual_service(isvc, known, kube) if reconcile_ingress else False
        return propagate_status(isvc, live, now(), render_error=render_error, rollout=rollout,
                                predictor=predictor, component=component), written
    written, present, ingress_error = False, known.virtual_service(key_of(isvc)) is not None, None
    if reconcile_ingress:
        try:
            written, present = _apply_virtual_service(isvc, live, predictor["status"] == "True", known, kube,
                                                      service_host if raw else None)
        except RenderError as exc:
            ingress_error = str(exc)
    metadata = isvc["metadata"]
    host = external_host(metadata["name"], metadata["namespace"], config.ingress.domain)
    ingress = ingress_condition(predictor, present, host)
    if ingress_error is not None:
        ingress = {"type": "IngressReady", "status": "False", "reason": "RenderFailed",
                   "message": ingress_error}
    urls = ingress_urls(isvc, config) if present else None
    status = propagate_status(isvc, live, now(), render_error=render_error, ingress=ingress,
                              ingress_urls=urls, rollout=rollout, predictor=predictor, component=component)
    return status, written


def _apply_virtual_service(isvc: dict[str, Any], ksvc: dict[str, Any] | None, predictor_ready: bool,
                           known: Known, kube: Kube,
                           raw_service_host: str | None = None) -> tuple[bool, bool]:
    """Create the VirtualService once the predictor is ready; keep it as desired afterwards.

    Returns (written, present)."""
    key = key_of(isvc)
    live = known.virtual_service(key)
    if live is None and not predictor_ready:
        return False, False
    desired = render_virtual_service(isvc, known.config, ksvc, raw_service_host=raw_service_host)
    if _already_applied(known, VIRTUAL_SERVICE, key, desired, live):
        return False, True
    before = None if live is None else live["metadata"].get("resourceVersion")
    live = kube.apply_virtual_service(desired)
    known.wrote(VIRTUAL_SERVICE, live)
    known.applied[(VIRTUAL_SERVICE, key)] = (desired, _object_version(live))
    return live["metadata"].get("resourceVersion") != before, True


def _remove_virtual_service(isvc: dict[str, Any], known: Known, kube: Kube) -> bool:
    """Ingress mode `none`: the isvc's own VirtualService goes away."""
    key = key_of(isvc)
    live = known.virtual_service(key)
    uid = isvc["metadata"].get("uid")
    owners = [] if live is None else live["metadata"].get("ownerReferences") or []
    if not any(ref.get("uid") == uid for ref in owners):
        return False
    kube.delete_virtual_service(*key)
    known.forget(VIRTUAL_SERVICE, key)
    return True


def _storage_credentials(namespace: str, isvc: dict[str, Any], known: Known,
                         kube: Kube) -> StorageCredentials:
    """From the predictor's ServiceAccount: what its Secrets' key names and annotations call for.

    The Secrets are read (`get`, by the names the ServiceAccount lists) when its version is new to this
    process; only their key names and S3 annotations are kept."""
    account = (namespace, service_account_name(isvc))
    service_account = known.service_account(account)
    if service_account is None:
        return StorageCredentials()
    cached = known.secret_summaries.get(account)
    if cached is None or cached[0] != service_account.resource_version:
        summaries = []
        for secret_name in service_account.secrets:
            summary = kube.secret_summary(namespace, secret_name)
            if summary is not None:
                summaries.append(summary)
        cached = (service_account.resource_version, tuple(summaries))
        known.secret_summaries[account] = cached
    return storage_credentials(list(cached[1]))


def _post_transitions(isvc: dict[str, Any], old: dict[str, Any], new: dict[str, Any],
                      render_error: str | None, kube: Kube, logger: logging.Logger) -> None:
    if render_error is not None:
        before = {c.get("type"): c for c in old.get("conditions") or []}.get("PredictorReady") or {}
        if before.get("reason") != "RenderFailed" or before.get("message") != render_error:
            post(kube, logger, isvc, "Warning", "RenderFailed", render_error)
    transition = ready_transition(old, new)
    if transition is not None:
        post(kube, logger, isvc, *transition)


def _warn_config_problems(isvc: dict[str, Any], known: Known, kube: Kube, logger: logging.Logger) -> None:
    """A missing ConfigMap has no object to carry the event: tell each isvc once."""
    problems = known.config.problems
    if known.config_map() is not None or not problems:
        return
    uid = isvc["metadata"].get("uid", "")
    if known.warned_config.get(uid) != problems:
        known.warned_config[uid] = problems
        message = f"ConfigMap {known.namespace}/{CONFIGMAP_NAME} not found; using the documented defaults"
        post(kube, logger, isvc, "Warning", "ConfigMissing", message)


def _retry_later(isvc: dict[str, Any], known: Known, kube: Kube, logger: logging.Logger,
                 reason: str) -> kopf.TemporaryError:
    key = key_of(isvc)
    attempt = known.failures.get(key, 0)
    known.failures[key] = attempt + 1
    delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
    logger.warning("reconciling %s/%s failed (%s); retrying in %.0fs", *key, reason, delay)
    if attempt == 0:
        post(kube, logger, isvc, "Warning", "ReconcileFailed", f"{reason}; retrying")
    return kopf.TemporaryError(f"{reason}; retrying", delay=delay)


def post(kube: Kube, logger: logging.Logger, involved: dict[str, Any], type_: str, reason: str,
         message: str) -> None:
    """Post an event; an event that cannot be posted is logged, never a reason to fail."""
    try:
        kube.post_event(involved, type_, reason, message)
    except ApiException as exc:
        logger.warning("posting event %s failed: %s %s", reason, exc.status, exc.reason)
    except Exception as exc:  # e.g. the apiserver unreachable: the reconcile's own call reports it
        logger.warning("posting event %s failed: %s", reason, exc)
