"""`make demo`'s walkthrough with its pods on the real node: the same :class:`~e2e.demo.Walkthrough` and
:class:`~e2e.demo.Steps` as the demo, on this session's node (``pods: real kubelet on node ...``): deploy/'s
operator Deployment from the operator image, the examples' torchserve.yaml unmodified, its revision a
Deployment whose pods the kubelet runs, the seed's curl through the ingress. The canary step is left to the
demo on processes (e2e/test_demo.py): its second predictor requests one more CPU than this 2-CPU node has.

This module comes last among the node's tests (file order): its install re-applies deploy/ over the
operator Deployment the other modules configured.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from e2e.demo import NODE, Steps, Walkthrough, mnist_request, pods_mode
from e2e.node.node import RealNode
from e2e.standin.node_serving import NodeServingStandin

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def walkthrough(node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walkthrough]:
    lines: list[str] = []
    env = Walkthrough(tmp_path_factory.mktemp("walkthrough"), say=lines.append, node=node)
    try:
        env.start()
        yield env
    finally:
        env.stop()
        print("\n".join(lines))


def test_the_walkthrough_on_the_node_passes_every_step_before_the_canary(walkthrough: Walkthrough) -> None:
    mode, line = pods_mode("auto", None, walkthrough.node.layout.name if walkthrough.node else "")
    assert mode == NODE and line.startswith("pods: real kubelet on node tisvc-node-")
    assert isinstance(walkthrough.standin, NodeServingStandin)
    said: list[str] = []
    steps = Steps(walkthrough, mnist_request(walkthrough.workdir), say=said.append)
    for step in (steps.create, steps.ready, steps.predict, steps.explain):
        step()
    failed = [f"{c.name}: {c.detail}" for c in steps.checks if not c.ok]
    assert not failed, "\n".join(failed + said[-6:] + [walkthrough.diagnose()])
    assert [c.name for c in steps.checks] == ["apply", "READY True", "URL", "predict", "explain"]
    pods = walkthrough.kubectl.get("-n", "kfserving-test", "pods", "-l",
                                   "serving.knative.dev/revision=torchserve-predictor-default-00001")
    assert [p["spec"]["nodeName"] for p in pods["items"]] == [walkthrough.node.layout.name]
