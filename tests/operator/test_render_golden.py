"""The seed's InferenceService samples render to exactly the Knative Services in golden/.

Regenerate after an intended change with `UPDATE_GOLDEN=1 pytest tests/operator/test_render_golden.py`
and review the diff.
"""

from __future__ import annotations

import os

import pytest
import yaml
from isvc_operator.config import default_config
from isvc_operator.render import render_knative_service
from operator_samples import GOLDEN, load_sample

SAMPLES = ["torchserve", "gpu", "autoscaling", "metrics", "canary", "logger", "grpc"]


@pytest.mark.parametrize("sample", SAMPLES)
def test_each_sample_renders_its_golden_knative_service(sample: str) -> None:
    rendered = render_knative_service(load_sample(sample), default_config())
    golden = GOLDEN / f"{sample}.ksvc.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(yaml.safe_dump(rendered, sort_keys=True))
    assert rendered == yaml.safe_load(golden.read_text())


def test_golden_torchserve_has_kfserving_names_labels_and_owner() -> None:
    ksvc = yaml.safe_load((GOLDEN / "torchserve.ksvc.yaml").read_text())
    assert ksvc["metadata"]["name"] == "torchserve-predictor-default"
    assert ksvc["metadata"]["labels"] == {
        "serving.kubeflow.org/inferenceservice": "torchserve", "component": "predictor"}
    [owner] = ksvc["metadata"]["ownerReferences"]
    assert owner["kind"] == "InferenceService" and owner["name"] == "torchserve" and owner["controller"]
    pod = ksvc["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["kfserving-container"]
    assert [c["name"] for c in pod["initContainers"]] == ["storage-initializer"]
