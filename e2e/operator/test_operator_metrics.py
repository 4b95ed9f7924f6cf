"""The running operator's Prometheus metrics: reconciles by result, their duration, isvcs by readiness."""

from __future__ import annotations

import urllib.request

from e2e.inference_services import ready_isvc
from e2e.installation import OperatorProcess
from e2e.localkube import Kubectl
from e2e.operator.conftest import wait_for


def scrape(operator: OperatorProcess) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("isvc_operator_"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_operator_counts_reconciles_and_ready_isvcs(
    operator: OperatorProcess, knative, kubectl: Kubectl, namespace: str, apply_sample
) -> None:
    before = scrape(operator)
    apply_sample("torchserve")
    wait_for(lambda: ready_isvc(kubectl, namespace), what="READY True")

    def counted() -> dict[str, float] | None:
        after = scrape(operator)
        return after if after['isvc_operator_inferenceservices{ready="True"}'] >= 1 else None

    after = wait_for(counted, what="a ready isvc in the operator's metrics")
    changed = 'isvc_operator_reconciles_total{result="changed"}'
    assert after[changed] > before[changed]
    durations = "isvc_operator_reconcile_duration_seconds_count"
    assert after[durations] > before[durations]
    results = [v for k, v in after.items() if k.startswith("isvc_operator_reconciles_total")]
    assert after[durations] == sum(results)  # every reconcile is timed and counted once
