"""Where `make demo` runs the walkthrough's pods: on the real node when it can start, else as local processes,
and the line that says which (pure functions of e2e/demo.py)."""

from __future__ import annotations

import pytest

from e2e.demo import AUTO, NODE, PROCESSES, NodeUnavailable, node_problem, pods_mode


def test_the_demo_runs_on_the_node_when_it_started_and_says_so() -> None:
    mode, line = pods_mode(AUTO, None, "tisvc-node-1a2b3c")
    assert mode == NODE
    assert line.startswith("pods: real kubelet on node tisvc-node-1a2b3c (")


def test_the_demo_falls_back_to_local_processes_with_the_reason_the_node_could_not_start() -> None:
    mode, line = pods_mode(AUTO, "the real node needs root (network namespaces, cgroups, mounts)")
    assert mode == PROCESSES
    assert line == ("pods: local processes (stand-in) because the real node needs root (network namespaces, "
                    "cgroups, mounts)")


def test_processes_asked_for_are_used_without_trying_the_node() -> None:
    assert pods_mode(PROCESSES, None, "tisvc-node-1a2b3c") == (
        PROCESSES, "pods: local processes (stand-in) because --pods processes was asked for")


def test_the_node_asked_for_and_not_startable_is_an_error_with_the_reason() -> None:
    with pytest.raises(NodeUnavailable, match="--pods node: node binaries missing"):
        pods_mode(NODE, "node binaries missing (run `make node`): kubelet")
    with pytest.raises(ValueError, match="one of auto, node, processes"):
        pods_mode("docker", None)


def test_the_node_is_not_tried_without_root_binaries_or_the_cpus_its_pods_request() -> None:
    assert node_problem(0, None, cpus=2, needed_cpu=1.2) is None
    assert "needs root" in (node_problem(1000, None, cpus=16, needed_cpu=1.2) or "")
    assert node_problem(0, "node binaries missing (run `make node`)", 16, 1.2) == \
        "node binaries missing (run `make node`)"
    assert node_problem(0, None, cpus=2, needed_cpu=2.2) == (
        "the walkthrough's pods request 2.2 CPUs and the node would have 2 (this machine's)")
