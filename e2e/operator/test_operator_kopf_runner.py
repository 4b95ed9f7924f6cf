"""The operator run the way kopf runs any operator module, `kopf run -m isvc_operator`, here in-process
through kopf's own `KopfRunner` (kopf.testing), as a second replica beside the session's operator
process: the same ServiceAccount, the same Lease. The session's operator holds the Lease, so this replica
watches, keeps its indexes, says it stands by, and writes nothing."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import kubernetes
import pytest
from kopf.testing import KopfRunner

from e2e.inference_services import ready_isvc
from e2e.installation import OPERATOR_NAMESPACE, OperatorProcess
from e2e.localkube import Kubectl
from e2e.operator.conftest import wait_for
from e2e.processes import free_port


def health(port: int) -> dict[str, str] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return json.loads(response.read())
    except OSError:
        return None


def lease_holder(kubectl: Kubectl) -> str:
    lease = kubectl.get("lease", "-n", OPERATOR_NAMESPACE, "torch-isvc-operator")
    assert lease is not None, "no Lease: nobody leads"
    return lease["spec"]["holderIdentity"]


def test_a_replica_run_by_kopf_stands_by_and_writes_nothing_while_another_leads(
    operator: OperatorProcess, operator_kubeconfig: Path, knative, kubectl: Kubectl, namespace: str,
    apply_sample, monkeypatch: pytest.MonkeyPatch,
) -> None:
    leader = wait_for(lambda: (health(operator.port) or {}).get("leading", "").endswith(": leading")
                      and health(operator.port)["leading"], what="the session's operator leading")
    holder = lease_holder(kubectl)
    assert leader.startswith(holder)
    port = free_port()
    monkeypatch.setenv("KUBECONFIG", str(operator_kubeconfig))
    # kopf logs in through the kubernetes package, whose default kubeconfig path was fixed when this pytest
    # process imported it; a `kopf run` process has KUBECONFIG in its environment from its start.
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION",
                        str(operator_kubeconfig))
    monkeypatch.setenv("ISVC_OPERATOR_NAMESPACE", OPERATOR_NAMESPACE)
    monkeypatch.setenv("ISVC_OPERATOR_METRICS_ADDRESS", f"127.0.0.1:{free_port()}")
    monkeypatch.delenv("ISVC_LEADER_ELECTION", raising=False)
    args = ["run", "-m", "isvc_operator", "--standalone", "--all-namespaces",
            f"--liveness=http://127.0.0.1:{port}/healthz"]
    with KopfRunner(args, timeout=60) as runner:
        standby = wait_for(lambda: (health(port) or {}).get("leading"), timeout=60,
                           what="the kopf-run replica's health endpoint")
        assert standby.endswith(": standing by"), standby
        apply_sample("torchserve")
        wait_for(lambda: ready_isvc(kubectl, namespace), timeout=60, what="READY True")
        assert lease_holder(kubectl) == holder
    assert runner.exception is None, runner.output
    assert runner.exit_code == 0, runner.output
    assert f"reconciled {namespace}/torchserve: ksvc written" in operator.log()
    assert f"reconciled {namespace}/torchserve" not in runner.output
    assert "Traceback" not in runner.output
    # Its own log is captured (so the absence above means something), and names the replica that acts.
    assert f"standing by: {holder} holds lease torch-isvc-operator" in runner.output
