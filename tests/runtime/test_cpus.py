"""Torch threads come from the CPUs the runtime may really use: affinity capped by the cgroup quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from isvc_runtime.cpus import available_cpus, quota_cpus


def write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


@pytest.mark.parametrize(
    ("cpu_max", "cpus"),
    [
        ("100000 100000", 1),
        ("150000 100000", 2),
        ("50000 100000", 1),
        ("400000 100000", 4),
        ("max 100000", None),
    ],
)
def test_cgroup_v2_quota_rounds_up_to_whole_cpus(tmp_path: Path, cpu_max: str, cpus: int | None) -> None:
    write(tmp_path, "cpu.max", cpu_max)
    assert quota_cpus(tmp_path) == cpus


def test_cgroup_v1_quota_and_its_no_limit_value(tmp_path: Path) -> None:
    write(tmp_path, "cpu/cpu.cfs_quota_us", "200000")
    write(tmp_path, "cpu/cpu.cfs_period_us", "100000")
    assert quota_cpus(tmp_path) == 2
    write(tmp_path, "cpu/cpu.cfs_quota_us", "-1")
    assert quota_cpus(tmp_path) is None


def test_no_cgroup_filesystem_means_no_quota(tmp_path: Path) -> None:
    assert quota_cpus(tmp_path / "absent") is None


def test_a_pod_limited_to_one_cpu_gets_one_whatever_the_node_has(tmp_path: Path) -> None:
    write(tmp_path, "cpu.max", "100000 100000")
    assert available_cpus(tmp_path) == 1


def test_without_a_quota_the_affinity_mask_counts(tmp_path: Path) -> None:
    write(tmp_path, "cpu.max", "max 100000")
    assert available_cpus(tmp_path) == len(os.sched_getaffinity(0))
