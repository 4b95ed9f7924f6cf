"""Fields that Knative's webhook defaults at admission never make the operator write again.

Every ksvc in these tests passes through Knative's real webhook (``e2e/knative/webhook.py``), which fills what
the operator leaves unset and records who created the Service."""

from __future__ import annotations

from e2e.inference_services import KSVC, ksvc_of, ready_isvc
from e2e.installation import OPERATOR_ACCOUNT, OPERATOR_NAMESPACE, OperatorProcess
from e2e.localkube import Kubectl
from e2e.operator.conftest import wait_for


def test_knative_defaulted_fields_cause_no_update_loop_and_no_write_on_restart(
    operator: OperatorProcess, knative, kubectl: Kubectl, namespace: str, apply_sample
) -> None:
    apply_sample("torchserve")
    wait_for(lambda: ready_isvc(kubectl, namespace), what="ready")
    ksvc = ksvc_of(kubectl, namespace)
    spec = ksvc["spec"]["template"]["spec"]
    defaulted = (spec["containerConcurrency"], spec["timeoutSeconds"], spec["enableServiceLinks"])
    assert defaulted == (0, 300, False)
    assert spec["containers"][0]["readinessProbe"]["successThreshold"] == 1
    creator = ksvc["metadata"]["annotations"]["serving.knative.dev/creator"]
    assert creator == f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"
    settled = ksvc["metadata"]["resourceVersion"]
    assert ksvc["metadata"]["generation"] == 1

    operator.stop()
    offset = len(operator.log())
    operator.start()
    wait_for(lambda: f"reconciled {namespace}/torchserve: no changes" in operator.log()[offset:],
             what="the restarted operator to reconcile torchserve")
    after = kubectl.get("-n", namespace, "services.serving.knative.dev", KSVC)
    assert after["metadata"]["resourceVersion"] == settled
    assert after["metadata"]["generation"] == 1
