"""What a real node changes on the host outside its own directories, and how it is put back.

A network namespace holds the node's links, routes, iptables rules and per-namespace sysctls, so deleting it
undoes those. What it cannot hold:

- kernel sysctls the kubelet sets at start (``setupKernelTunables`` in Kubernetes' ``pkg/kubelet/cm/
  container_manager_linux.go``): ``vm.overcommit_memory``, ``vm.panic_on_oom``, ``kernel.panic``,
  ``kernel.panic_on_oops``, ``kernel.keys.root_maxkeys``, ``kernel.keys.root_maxbytes``;
- cgroups: every pod's under the node's own cgroup root, created here in each cgroup v1 hierarchy;
- fixed paths: the kubelet's ``/var/lib/kubelet`` (device-plugins, pod-resources), the runc shims'
  sockets in ``/run/containerd/s``, libcni's cache in ``/var/lib/cni``, ``/var/log/pods``.

Sysctls and fixed paths are shared by every node on the host: the first node records the original values
and which paths existed in ``/run/torch-isvc-node-host.json`` (with the pids of the nodes using them, under
a lock), and the last one to stop puts them back, so that one node's stop never pulls the ground from under
another's.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from e2e.processes import pid_alive

KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
FIXED_PATHS = (
    Path("/var/lib/kubelet"),
    Path("/var/log/pods"),
    Path("/run/containerd"),
    Path("/var/lib/cni"),
)
CGROUP_PREFIX = "torch-isvc-node-"
_RECORD = Path("/run/torch-isvc-node-host.json")
_LOCK = Path("/run/torch-isvc-node-host.lock")
_PROC_SYS = Path("/proc/sys")


def read_sysctls() -> dict[str, str]:
    return {name: (_PROC_SYS / name).read_text().strip() for name in KUBELET_SYSCTLS}


def existing_fixed_paths() -> set[Path]:
    return {path for path in FIXED_PATHS if path.exists()}


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _alive(holder: str) -> bool:
    return pid_alive(int(holder.split("/", 1)[0]))


def hold(node: str) -> None:
    """Register a running node (held by this process); the first one records the host as it is."""
    with _locked():
        record = json.loads(_RECORD.read_text()) if _RECORD.exists() else {}
        holders = [h for h in record.get("holders", []) if _alive(h)]
        if not holders:
            record = {"sysctls": read_sysctls(), "paths": sorted(map(str, existing_fixed_paths()))}
        _RECORD.write_text(json.dumps({**record, "holders": [*holders, f"{os.getpid()}/{node}"]}))


def release(node: str) -> None:
    """Unregister a node; the last live one writes the sysctls back and removes the fixed paths that were
    not there before the first node started."""
    with _locked():
        if not _RECORD.exists():
            return
        record = json.loads(_RECORD.read_text())
        holders = [h for h in record["holders"] if h != f"{os.getpid()}/{node}" and _alive(h)]
        if holders:
            _RECORD.write_text(json.dumps({**record, "holders": holders}))
            return
        for name, value in record["sysctls"].items():
            with contextlib.suppress(OSError):
                (_PROC_SYS / name).write_text(value)
        for path in FIXED_PATHS:
            if str(path) not in record["paths"]:
                shutil.rmtree(path, ignore_errors=True)
        _RECORD.unlink()


def cgroup_hierarchies() -> list[Path]:
    """Mount points of the host's cgroup hierarchies (v1 controllers and the unified one)."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, mountpoint, fstype, *_ = line.split()
        if fstype in ("cgroup", "cgroup2"):
            found.append(Path(mountpoint))
    return found


def create_cgroup_root(name: str) -> None:
    """``/name`` in every hierarchy (the kubelet requires its cgroup root to exist); cpuset's copies its
    parent's cpus and mems, which a new v1 cpuset starts without."""
    for hierarchy in cgroup_hierarchies():
        path = hierarchy / name
        path.mkdir(exist_ok=True)
        for setting in ("cpuset.cpus", "cpuset.mems"):
            if (hierarchy / setting).exists():
                (path / setting).write_text((hierarchy / setting).read_text())


def _cgroup_pids(path: Path) -> set[int]:
    pids: set[int] = set()
    for procs in path.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            pids |= {int(line) for line in procs.read_text().split()}
    return pids


def remove_cgroup_root(name: str, timeout: float = 10.0) -> None:
    """SIGKILL whatever still runs in the node's cgroups, then remove them deepest first."""
    for hierarchy in cgroup_hierarchies():
        root = hierarchy / name
        if not root.exists():
            continue
        deadline = time.monotonic() + timeout
        while (pids := _cgroup_pids(root)) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        for directory in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()


def cgroup_leftovers() -> list[str]:
    return [str(h / d.name) for h in cgroup_hierarchies() if h.is_dir()
            for d in h.iterdir() if d.is_dir() and d.name.startswith(CGROUP_PREFIX)]


def mounts_under(*roots: Path) -> list[Path]:
    """Mount points at or below any of ``roots``, deepest first (the order to unmount them in)."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        mountpoint = Path(line.split()[1].replace("\\040", " "))
        if any(mountpoint == root or root in mountpoint.parents for root in roots):
            found.append(mountpoint)
    return sorted(found, key=lambda p: -len(p.parts))


def unmount_under(*roots: Path) -> None:
    for mountpoint in mounts_under(*roots):
        subprocess.run(["umount", "--lazy", str(mountpoint)], capture_output=True, check=False)
