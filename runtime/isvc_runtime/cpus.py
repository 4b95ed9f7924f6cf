"""How many CPUs this process may really use: its affinity mask, capped by a cgroup CPU quota.

In a Kubernetes pod with `limits.cpu: 1` on a 64-core node the affinity mask still lists 64 CPUs;
sizing torch's thread pool from it makes the kernel throttle the pod every period (the collapse that
TorchServe's defaults show). The quota (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us` /
`cpu.cfs_period_us`) is the number that matters, rounded up to whole CPUs.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def quota_cpus(cgroup_root: Path = CGROUP_ROOT) -> int | None:
    """Whole CPUs allowed by the cgroup quota, or None when there is no quota (or no cgroup fs)."""
    v2 = _read(cgroup_root / "cpu.max")
    if v2 is not None:
        parts = v2.split()
        if len(parts) == 2 and parts[0] != "max":
            return _ceil_ratio(parts[0], parts[1])
        return None
    quota = _read(cgroup_root / "cpu" / "cpu.cfs_quota_us") or _read(cgroup_root / "cpu.cfs_quota_us")
    period = _read(cgroup_root / "cpu" / "cpu.cfs_period_us") or _read(cgroup_root / "cpu.cfs_period_us")
    if quota is None or period is None:
        return None
    return _ceil_ratio(quota, period)


def available_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """The affinity mask's CPU count, capped by the cgroup quota; at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    quota = quota_cpus(cgroup_root)
    return max(1, min(cpus, quota) if quota is not None else cpus)


def _ceil_ratio(quota: str, period: str) -> int | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    if q <= 0 or p <= 0:  # v1 writes -1 for "no quota"
        return None
    return max(1, math.ceil(q / p))


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
