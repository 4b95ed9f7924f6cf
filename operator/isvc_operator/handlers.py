"""kopf handlers: receive watch events and hand them to the controller. Nothing else lives here.

Only event-watching handlers are used: kopf keeps no state in annotations or status, so the operator
never writes to an InferenceService except its status, and a restart writes nothing to unchanged objects.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from .config import DEFAULT_NAMESPACE
from .controller import Controller
from .ingress import ISTIO_GROUP, ISTIO_PLURAL, ISTIO_VERSION
from .kube import Kube, api_client
from .metrics import metrics_address, serve
from .naming import GROUP, ISVC_LABEL, KNATIVE_GROUP, KNATIVE_PLURAL, KNATIVE_VERSION, PLURAL, VERSION

NAMESPACE_ENV = "ISVC_OPERATOR_NAMESPACE"
LOG_LEVEL_ENV = "ISVC_OPERATOR_LOG_LEVEL"  # e.g. DEBUG: also log reconciles that changed nothing
_controller: Controller | None = None


def controller() -> Controller:
    if _controller is None:
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return _controller


@kopf.on.startup()
def start_controller(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    global _controller
    settings.peering.standalone = True
    settings.posting.enabled = False  # events are posted by the controller, about what matters
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.execution.max_workers = 8
    namespace = os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE
    operator_logger = logging.getLogger("isvc_operator")
    operator_logger.setLevel(os.environ.get(LOG_LEVEL_ENV, "INFO").upper())
    if operator_logger.level > logging.DEBUG:  # kopf logs every handled watch event at INFO
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # The API client logs response bodies at DEBUG, and the operator reads Secrets: never at DEBUG.
    logging.getLogger("kubernetes.client.rest").setLevel(logging.INFO)
    _controller = Controller(Kube(api_client()), namespace, operator_logger)
    _controller.start()
    serve(_controller.known_isvcs, *metrics_address(os.environ))
    logger.info("watching ConfigMap %s/inferenceservice-config", namespace)


@kopf.on.cleanup()
def stop_controller(**_: Any) -> None:
    if _controller is not None:
        _controller.stop()


@kopf.on.event(GROUP, VERSION, PLURAL)
def reconcile_predictor(event: dict[str, Any], body: kopf.Body, **_: Any) -> None:
    controller().isvc_event(event.get("type"), _plain(body))


@kopf.on.event(KNATIVE_GROUP, KNATIVE_VERSION, KNATIVE_PLURAL, labels={ISVC_LABEL: kopf.PRESENT})
def on_ksvc_status(event: dict[str, Any], body: kopf.Body, **_: Any) -> None:
    controller().ksvc_event(event.get("type"), _plain(body))


@kopf.on.event(ISTIO_GROUP, ISTIO_VERSION, ISTIO_PLURAL, labels={ISVC_LABEL: kopf.PRESENT})
def on_virtual_service(event: dict[str, Any], body: kopf.Body, **_: Any) -> None:
    controller().virtual_service_event(event.get("type"), _plain(body))


@kopf.on.event("", "v1", "serviceaccounts")
def on_service_account(event: dict[str, Any], body: kopf.Body, **_: Any) -> None:
    """Only the names of the Secrets it lists matter (storage credentials of the predictors running as it)."""
    controller().service_account_event(event.get("type"), _plain(body))


def _plain(body: kopf.Body) -> dict[str, Any]:
    return dict(body)
