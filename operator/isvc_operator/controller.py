"""Glue between watch events and the pure functions: what is known, what to reconcile, what to write.

State is what the watches reported (isvcs, ksvcs, the config), kept in memory. Writes are a
server-side apply of the ksvc (skipped when this process already applied the same desired object to
the same ksvc generation) and a status apply only when the computed status differs from the stored one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from .config import CONFIGMAP_NAME, OperatorConfig, parse_config
from .credentials import StorageCredentials, referenced_secrets, service_account_name, storage_credentials
from .ingress import external_host, ingress_condition, ingress_urls, render_virtual_service
from .kube import Kube, now
from .metrics import observe_reconcile
from .naming import ISVC_LABEL, predictor_service_name
from .render import RenderError, render_knative_service
from .status import predictor_condition, propagate_status, ready_transition
from .traffic import Rollout, rolled_out, stored_rollout

Key = tuple[str, str]
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)


def key_of(body: dict[str, Any]) -> Key:
    return body["metadata"]["namespace"], body["metadata"]["name"]


def _older(known: dict[str, Any] | None, incoming: dict[str, Any]) -> bool:
    """Whether a watch event carries an older version than one this process already holds (it wrote it).

    resourceVersions are etcd revisions; compared only when both are integers."""
    if known is None:
        return False
    try:
        return int(incoming["metadata"]["resourceVersion"]) < int(known["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return False


def _owned_by(obj: dict[str, Any], isvc: dict[str, Any]) -> bool:
    uid = isvc["metadata"].get("uid")
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


class Controller:
    def __init__(self, kube: Kube, namespace: str, logger: logging.Logger) -> None:
        self.kube = kube
        self.namespace = namespace
        self.logger = logger
        self.config: OperatorConfig = parse_config(None)
        self.config_body: dict[str, Any] | None = None
        self._isvcs: dict[Key, dict[str, Any]] = {}
        self._ksvcs: dict[Key, dict[str, Any]] = {}
        self._applied: dict[Key, tuple[dict[str, Any], int | None]] = {}
        self._virtual_services: dict[Key, dict[str, Any]] = {}
        self._vs_applied: dict[Key, tuple[dict[str, Any], int | None]] = {}
        self._service_accounts: dict[Key, dict[str, Any] | None] = {}
        self._secret_summaries: dict[Key, tuple[str | None, tuple[Any, ...]]] = {}
        self._warned_config: dict[str, tuple[str, ...]] = {}
        self._failures: dict[Key, int] = {}
        self._locks: dict[Key, threading.Lock] = {}
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._timers: set[threading.Timer] = set()
        self._listed = False  # the ksvcs and VirtualServices that existed at start are known

    # --- watch events -------------------------------------------------------------------------

    def isvc_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        key = key_of(body)
        with self._guard:
            if event_type == "DELETED":
                self._isvcs.pop(key, None)
                self._applied.pop(key, None)
                self._failures.pop(key, None)
                self._vs_applied.pop(key, None)
                return
            if _older(self._isvcs.get(key), body):
                return
            self._isvcs[key] = body
        self.reconcile(key)

    def ksvc_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        namespace, name = key_of(body)
        owner = (body["metadata"].get("labels") or {}).get(ISVC_LABEL)
        with self._guard:
            if event_type == "DELETED":
                self._ksvcs.pop((namespace, name), None)
            elif _older(self._ksvcs.get((namespace, name)), body):
                return
            else:
                self._ksvcs[(namespace, name)] = body
        if owner and predictor_service_name(owner) == name and (namespace, owner) in self._isvcs:
            self.reconcile((namespace, owner))

    def virtual_service_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        key = key_of(body)
        owner = (body["metadata"].get("labels") or {}).get(ISVC_LABEL)
        with self._guard:
            if event_type == "DELETED":
                self._virtual_services.pop(key, None)
                self._vs_applied.pop(key, None)
            elif _older(self._virtual_services.get(key), body):
                return
            else:
                self._virtual_services[key] = body
        if owner == key[1] and key in self._isvcs:
            self.reconcile(key)

    def service_account_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        """A ServiceAccount appeared, changed or went: re-render the isvcs whose predictor runs as it."""
        account = key_of(body)
        with self._guard:
            known = self._service_accounts.get(account)
            if event_type == "DELETED":
                self._service_accounts[account] = None
            elif known is not None and (_older(known, body) or known["metadata"].get("resourceVersion")
                                        == body["metadata"].get("resourceVersion")):
                return
            else:
                self._service_accounts[account] = body
            users = [key for key, isvc in self._isvcs.items()
                     if key[0] == account[0] and service_account_name(isvc) == account[1]]
        for key in users:
            self.reconcile(key)

    def config_changed(self, config_map: dict[str, Any] | None) -> None:
        config = parse_config(None if config_map is None else (config_map.get("data") or {}))
        self.config_body = config_map
        changed = config != self.config or config.problems != self.config.problems
        self.config = config
        if config.problems and config_map is not None and changed:
            involved = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
                "name": CONFIGMAP_NAME, "namespace": self.namespace,
                "uid": (config_map.get("metadata") or {}).get("uid", "")}}
            self._post(involved, "Warning", "InvalidConfig", "; ".join(config.problems))
        if config.problems:
            self.logger.warning("inferenceservice-config: %s", "; ".join(config.problems))
        if changed:
            self.reconcile_all()

    def reconcile_all(self) -> None:
        with self._guard:
            keys = list(self._isvcs)
        for key in keys:
            if self._stop.is_set():
                return
            self.reconcile(key)

    # --- reconciliation -----------------------------------------------------------------------

    def _lock(self, key: Key) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def reconcile(self, key: Key) -> None:
        with self._lock(key):
            isvc = self._isvcs.get(key)
            if isvc is None:
                return
            started, result = time.perf_counter(), "error"
            try:
                result = self._reconcile(key, isvc)
                self._failures.pop(key, None)
            except ApiException as exc:
                result = "api_error"
                self._retry_later(key, isvc, f"API error {exc.status} {exc.reason}")
            except Exception as exc:  # a bug must not stop the other isvcs: report and retry
                self.logger.exception("reconciling %s/%s failed", *key)
                self._retry_later(key, isvc, f"{type(exc).__name__}: {exc}")
            finally:
                observe_reconcile(result, time.perf_counter() - started)

    def known_isvcs(self) -> list[dict[str, Any]]:
        """The InferenceServices the watch delivered, as last seen (for the readiness metric)."""
        with self._guard:
            return list(self._isvcs.values())

    def _reconcile(self, key: Key, isvc: dict[str, Any]) -> str:
        """Bring the ksvc, VirtualService and status in line; the result for the metrics."""
        namespace, name = key
        ksvc_name = predictor_service_name(name)
        self._warn_config_problems(isvc)
        live = self._ksvcs.get((namespace, ksvc_name))
        if live is None and not self._listed:
            # Traffic is computed from the live ksvc: never from a watch that has not delivered it yet
            # (after a restart, a missing ksvc would mean "100% latest" in the middle of a canary).
            live = self.kube.get_knative_service(namespace, ksvc_name)
            if live is not None:
                with self._guard:
                    live = self._ksvcs.setdefault((namespace, ksvc_name), live)
        old_status = isvc.get("status") or {}
        rollout = rolled_out(old_status, live)
        render_error = None
        try:
            credentials = self._storage_credentials(namespace, isvc)
            desired = render_knative_service(isvc, self.config, live=live, credentials=credentials,
                                             rollout=rollout)
        except RenderError as exc:
            desired, render_error = None, str(exc)
        status_written = False
        if rollout != stored_rollout(old_status):
            # A promotion is persisted before any traffic that names the new rolled-out revision.
            status = self._status(isvc, live, render_error, rollout)[0]
            self._write_status(key, isvc, old_status, status, render_error)
            old_status, status_written = status, True
        applied = desired is not None and not self._already_applied(key, desired, live)
        if applied:
            before = None if live is None else live["metadata"].get("resourceVersion")
            live = self.kube.apply_knative_service(desired)
            applied = live["metadata"].get("resourceVersion") != before
            with self._guard:
                self._ksvcs[(namespace, ksvc_name)] = live
                self._applied[key] = (desired, live["metadata"].get("generation"))
        status, ingress_written = self._status(isvc, live, render_error, rollout, reconcile_ingress=True)
        if status != old_status:
            self._write_status(key, isvc, old_status, status, render_error)
            status_written = True
        if applied or status_written or ingress_written:
            self.logger.info("reconciled %s/%s: ksvc %s, virtualservice %s, status %s", namespace, name,
                             _written(applied), _written(ingress_written), _written(status_written))
            return "render_error" if render_error is not None else "changed"
        self.logger.debug("reconciled %s/%s: no changes", namespace, name)
        return "render_error" if render_error is not None else "unchanged"

    def _write_status(self, key: Key, isvc: dict[str, Any], old: dict[str, Any], status: dict[str, Any],
                      render_error: str | None) -> None:
        written = self.kube.apply_status(key[0], key[1], status)
        with self._guard:
            if key in self._isvcs:
                if (written.get("metadata") or {}).get("resourceVersion"):
                    self._isvcs[key] = written
                else:
                    self._isvcs[key] = {**self._isvcs[key], "status": written.get("status", status)}
        self._post_transitions(isvc, old, status, render_error)

    def _status(self, isvc: dict[str, Any], live: dict[str, Any] | None, render_error: str | None,
                rollout: Rollout, reconcile_ingress: bool = False) -> tuple[dict[str, Any], bool]:
        """The isvc's status; with `reconcile_ingress`, the VirtualService is brought in line first."""
        if self.config.ingress.mode != "istio":
            written = self._remove_virtual_service(isvc) if reconcile_ingress else False
            return propagate_status(isvc, live, now(), render_error=render_error, rollout=rollout), written
        predictor = predictor_condition(live, render_error)
        written, present, ingress_error = False, key_of(isvc) in self._virtual_services, None
        if reconcile_ingress:
            try:
                written, present = self._apply_virtual_service(isvc, live, predictor["status"] == "True")
            except RenderError as exc:
                ingress_error = str(exc)
        metadata = isvc["metadata"]
        host = external_host(metadata["name"], metadata["namespace"], self.config.ingress.domain)
        ingress = ingress_condition(predictor, present, host)
        if ingress_error is not None:
            ingress = {"type": "IngressReady", "status": "False", "reason": "RenderFailed",
                       "message": ingress_error}
        urls = ingress_urls(isvc, self.config) if present else None
        status = propagate_status(isvc, live, now(), render_error=render_error, ingress=ingress,
                                  ingress_urls=urls, rollout=rollout)
        return status, written

    def _apply_virtual_service(self, isvc: dict[str, Any], ksvc: dict[str, Any] | None,
                               predictor_ready: bool) -> tuple[bool, bool]:
        """Create the VirtualService once the predictor is ready; keep it as desired afterwards.

        Returns (written, present)."""
        key = key_of(isvc)
        live = self._virtual_services.get(key)
        if live is None and not predictor_ready:
            return False, False
        if live is None and not self._listed:  # about to create it, unless the watch has not delivered it
            live = self.kube.get_virtual_service(*key)
            if live is not None:
                with self._guard:
                    self._virtual_services.setdefault(key, live)
        desired = render_virtual_service(isvc, self.config, ksvc)
        applied = self._vs_applied.get(key)
        if live is not None and applied is not None and applied[0] == desired and \
                applied[1] == live["metadata"].get("generation"):
            return False, True
        before = None if live is None else live["metadata"].get("resourceVersion")
        live = self.kube.apply_virtual_service(desired)
        with self._guard:
            self._virtual_services[key] = live
            self._vs_applied[key] = (desired, live["metadata"].get("generation"))
        return live["metadata"].get("resourceVersion") != before, True

    def _remove_virtual_service(self, isvc: dict[str, Any]) -> bool:
        """Ingress mode `none`: the isvc's own VirtualService goes away."""
        key = key_of(isvc)
        live = self._virtual_services.get(key)
        if live is None or not _owned_by(live, isvc):
            return False
        self.kube.delete_virtual_service(*key)
        with self._guard:
            self._virtual_services.pop(key, None)
            self._vs_applied.pop(key, None)
        return True

    def _storage_credentials(self, namespace: str, isvc: dict[str, Any]) -> StorageCredentials:
        """From the predictor's ServiceAccount: what its Secrets' key names and annotations call for.

        Secrets are read (`get`, by the names the ServiceAccount lists) when the ServiceAccount is first
        seen or changes; only their key names and S3 annotations are kept."""
        account = (namespace, service_account_name(isvc))
        if account not in self._service_accounts:
            found = self.kube.get_service_account(*account)
            with self._guard:
                self._service_accounts.setdefault(account, found)
        service_account = self._service_accounts.get(account)
        if service_account is None:
            return StorageCredentials()
        version = service_account["metadata"].get("resourceVersion")
        cached = self._secret_summaries.get(account)
        if cached is None or cached[0] != version:
            summaries = []
            for secret_name in referenced_secrets(service_account):
                summary = self.kube.secret_summary(namespace, secret_name)
                if summary is not None:
                    summaries.append(summary)
            cached = (version, tuple(summaries))
            with self._guard:
                self._secret_summaries[account] = cached
        return storage_credentials(list(cached[1]))

    def _already_applied(self, key: Key, desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
        if live is None:
            return False
        applied = self._applied.get(key)
        generation = live["metadata"].get("generation")
        return applied is not None and applied[0] == desired and applied[1] == generation

    def _post_transitions(self, isvc: dict[str, Any], old: dict[str, Any], new: dict[str, Any],
                          render_error: str | None) -> None:
        if render_error is not None:
            before = {c.get("type"): c for c in old.get("conditions") or []}.get("PredictorReady") or {}
            if before.get("reason") != "RenderFailed" or before.get("message") != render_error:
                self._post(isvc, "Warning", "RenderFailed", render_error)
        transition = ready_transition(old, new)
        if transition is not None:
            self._post(isvc, *transition)

    def _warn_config_problems(self, isvc: dict[str, Any]) -> None:
        """A missing ConfigMap has no object to carry the event: tell each isvc once."""
        if self.config_body is not None or not self.config.problems:
            return
        uid = isvc["metadata"].get("uid", "")
        if self._warned_config.get(uid) != self.config.problems:
            self._warned_config[uid] = self.config.problems
            message = f"ConfigMap {self.namespace}/{CONFIGMAP_NAME} not found; using the documented defaults"
            self._post(isvc, "Warning", "ConfigMissing", message)

    def _retry_later(self, key: Key, isvc: dict[str, Any], reason: str) -> None:
        attempt = self._failures.get(key, 0)
        self._failures[key] = attempt + 1
        delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
        self.logger.warning("reconciling %s/%s failed (%s); retrying in %.0fs", *key, reason, delay)
        if attempt == 0:
            self._post(isvc, "Warning", "ReconcileFailed", f"{reason}; retrying")
        self._schedule(delay, lambda: self.reconcile(key))

    def _schedule(self, delay: float, action: Callable[[], None]) -> None:
        if self._stop.is_set():
            return

        def run() -> None:
            self._timers.discard(timer)
            if not self._stop.is_set():
                action()

        timer = threading.Timer(delay, run)
        timer.daemon = True
        self._timers.add(timer)
        timer.start()

    def _post(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        try:
            self.kube.post_event(involved, type_, reason, message)
        except ApiException as exc:
            self.logger.warning("posting event %s failed: %s %s", reason, exc.status, exc.reason)

    # --- the ConfigMap watch ------------------------------------------------------------------

    def load_config(self) -> None:
        self.config_changed(self.kube.read_config_map(self.namespace, CONFIGMAP_NAME))

    def watch_config(self) -> None:
        """Follow the one ConfigMap until stop(); a thread (the Role allows only this name)."""
        import kubernetes

        while not self._stop.is_set():
            try:
                listing = self.kube.core.list_namespaced_config_map(
                    self.namespace, field_selector=f"metadata.name={CONFIGMAP_NAME}")
                items = listing.items
                current = items[0].to_dict() if items else None
                if _config_data(current) != _config_data(self.config_body):
                    self.config_changed(current)
                stream = kubernetes.watch.Watch().stream(
                    self.kube.core.list_namespaced_config_map, self.namespace,
                    field_selector=f"metadata.name={CONFIGMAP_NAME}",
                    resource_version=listing.metadata.resource_version, timeout_seconds=60,
                    _request_timeout=90)
                for event in stream:
                    if self._stop.is_set():
                        return
                    body = event["object"].to_dict()
                    self.config_changed(None if event["type"] == "DELETED" else body)
            except Exception as exc:
                self.logger.warning("watching the ConfigMap failed (%s); retrying", exc)
                self._stop.wait(2.0)

    def list_owned_objects(self) -> None:
        """Before any reconcile: the ksvcs and VirtualServices that exist now (one list call each), so
        that a reconcile racing the watches' first events still sees them. Without it (the listing
        failed), a reconcile reads a missing object before rendering."""
        try:
            ksvcs, virtual_services = self.kube.list_owned(ISVC_LABEL)
        except ApiException as exc:
            self.logger.warning("listing owned objects failed (%s %s); reading them one by one",
                                exc.status, exc.reason)
            return
        with self._guard:
            for body in ksvcs:
                self._ksvcs.setdefault(key_of(body), body)
            for body in virtual_services:
                self._virtual_services.setdefault(key_of(body), body)
            self._listed = True

    def start(self) -> None:
        self.list_owned_objects()
        self.load_config()
        threading.Thread(target=self.watch_config, name="config-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        for timer in list(self._timers):
            timer.cancel()


def _written(flag: bool) -> str:
    return "written" if flag else "unchanged"


def _config_data(config_map: dict[str, Any] | None) -> dict[str, str] | None:
    return None if config_map is None else (config_map.get("data") or {})
