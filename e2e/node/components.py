"""The node's own processes: containerd, kubelet, kube-proxy and kube-scheduler, started in the node's
network namespace against an apiserver reachable there, and stopped so that nothing stays behind.

Processes enter the namespace with ``nsenter --net`` rather than ``ip netns exec``: the latter also gives
them a private mount namespace with a fresh /sys, which hides the host's cgroup v1 hierarchies (the kubelet
and runc need them) and keeps the kubelet's volume mounts out of containerd's sight.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from e2e.netns import NetworkNamespace
from e2e.node import configs, host
from e2e.node.configs import NodeLayout
from e2e.processes import popen, stop, tail

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "e2e" / "cluster" / "build.sh"
IMAGES_SCRIPT = REPO_ROOT / "e2e" / "images" / "build.sh"
CRI_NAMESPACE = "k8s.io"
_IMPORTED_RECORD = "torch-isvc-imported.json"


class NodeError(RuntimeError):
    """The node could not start; the message says which part and carries its log's tail."""


def _cache_dir(flag: str) -> Path:
    done = subprocess.run(["bash", str(BUILD_SCRIPT), flag], capture_output=True, text=True, check=True)
    return Path(done.stdout.strip())


def node_binaries() -> dict[str, Path]:
    """The node's binaries, built by ``e2e/cluster/build.sh --node`` (``make node``)."""
    k8s, containerd = _cache_dir("--print-dir"), _cache_dir("--print-containerd-dir")
    found = {name: k8s / name for name in ("kube-scheduler", "kubelet", "kube-proxy")}
    found |= {name: containerd / name for name in ("containerd", "containerd-shim-runc-v2", "ctr")}
    missing = [str(path) for path in found.values() if not os.access(path, os.X_OK)]
    if missing:
        raise NodeError(f"node binaries missing (run `make node`): {', '.join(missing)}")
    return found


def in_namespace(ns: NetworkNamespace, argv: Sequence[str]) -> list[str]:
    """``argv`` in the node's network namespace only (mounts, /sys and cgroups stay the host's)."""
    return ["nsenter", f"--net=/run/netns/{ns.name}", "--", *argv]


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        return tail(self.log, lines)


@dataclass
class NodeComponents:
    """containerd + kubelet + kube-proxy + kube-scheduler of one node.

    ``kubeconfigs`` reach the apiserver from inside the namespace, one per component, each with the identity
    Kubernetes' bootstrap RBAC expects (``node_identities``); ``client_ca_file`` is the CA the apiserver's
    client certificates are signed by (the kubelet trusts it for logs and exec)."""

    ns: NetworkNamespace
    layout: NodeLayout
    kubeconfigs: dict[str, Path]
    client_ca_file: Path
    images: tuple[str, ...] = ("pause",)
    startup_timeout: float = 60.0
    processes: list[Process] = field(default_factory=list)
    _binaries: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    _holding: bool = False

    # -- lifecycle --

    def start(self) -> None:
        self._binaries = node_binaries()
        for directory in (self.layout.workdir, self.layout.containerd_root, self.layout.cni_conf_dir,
                          self.layout.pod_logs, self.layout.kubelet_root):
            directory.mkdir(parents=True, exist_ok=True)
        self._write_configs()
        host.hold(self.layout.name)
        self._holding = True
        host.create_cgroup_root(self.layout.cgroup_root.strip("/"))
        began = time.monotonic()
        self._spawn("containerd", [str(self._binaries["containerd"]), "--config",
                                   str(self.layout.workdir / "containerd.toml")],
                    env_path=self._binaries["containerd"].parent)
        self._wait(lambda: self._ctr("version").returncode == 0, "containerd")
        self._remove_all_containers()  # a node killed before its stop left them in the kept image store
        self.timings["containerd"] = time.monotonic() - began
        self.import_image("pause")  # the kubelet's first sandbox needs it; the other images after Ready
        began = time.monotonic()
        self._spawn("kubelet", [
            str(self._binaries["kubelet"]),
            f"--config={self.layout.workdir / 'kubelet.json'}",
            f"--kubeconfig={self.kubeconfigs['kubelet']}",
            f"--root-dir={self.layout.kubelet_root}",
            f"--cert-dir={self.layout.workdir / 'kubelet-pki'}",
            f"--hostname-override={self.layout.name}",
            f"--node-ip={self.layout.address}",
        ])
        self._spawn("kube-proxy", [str(self._binaries["kube-proxy"]),
                                   f"--config={self.layout.workdir / 'kube-proxy.json'}"])
        self._spawn("kube-scheduler", [
            str(self._binaries["kube-scheduler"]),
            f"--kubeconfig={self.kubeconfigs['kube-scheduler']}",
            f"--authentication-kubeconfig={self.kubeconfigs['kube-scheduler']}",
            f"--authorization-kubeconfig={self.kubeconfigs['kube-scheduler']}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
        ])
        self.timings["components spawned"] = time.monotonic() - began

    def import_images(self) -> None:
        began = time.monotonic()
        for image in self.images:
            if image != "pause":
                self.import_image(image)
        self.timings["image import"] = time.monotonic() - began

    def stop(self) -> None:
        """Stop in reverse order, remove every container containerd still runs, unmount, and restore the
        host (cgroups, sysctls, fixed paths). Idempotent."""
        by_name = {p.name: p for p in self.processes}
        for name in ("kube-scheduler", "kube-proxy", "kubelet"):
            if name in by_name:
                stop(by_name[name].proc, 10.0)
        if "containerd" in by_name and by_name["containerd"].proc.poll() is None:
            self._remove_all_containers()
            stop(by_name["containerd"].proc, 10.0)
        self._kill_shims()
        host.remove_cgroup_root(self.layout.cgroup_root.strip("/"))
        host.unmount_under(self.layout.workdir, self.layout.containerd_root)
        if self._holding:
            host.release(self.layout.name)
            self._holding = False
        self.processes = []

    # -- images --

    def import_image(self, target: str) -> None:
        """Import the image built by ``e2e/images/build.sh`` unless containerd's store already holds this
        very build (by buildah's image id, recorded beside containerd's root)."""
        name = subprocess.run(["bash", str(IMAGES_SCRIPT), "--print-image", target],
                              capture_output=True, text=True, check=True).stdout.strip()
        image_id = subprocess.run(["bash", str(IMAGES_SCRIPT), "--print-id", target],
                                  capture_output=True, text=True, check=False).stdout.strip()
        if not image_id:
            raise NodeError(f"image {name} is not built (run `make images-local`)")
        record_file = self.layout.containerd_root / _IMPORTED_RECORD
        record = json.loads(record_file.read_text()) if record_file.exists() else {}
        present = name in self._ctr("images", "ls", "--quiet").stdout.split()
        if present and record.get(name) == image_id:
            return
        export = subprocess.Popen(["bash", str(IMAGES_SCRIPT), "--export", target], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        assert export.stdout is not None
        # Layers are unpacked into overlayfs snapshots, then dropped from the content store (--local is what
        # allows that); pinned: the kubelet's image garbage collection never removes them.
        imported = subprocess.run(
            self._ctr_argv("images", "import", "--local", "--discard-unpacked-layers", "--snapshotter",
                           "overlayfs", "--label", "io.cri-containerd.pinned=pinned", "-"),
            stdin=export.stdout, capture_output=True, text=True, check=False,
        )
        export.stdout.close()
        exported = export.wait()
        if exported != 0 or imported.returncode != 0:
            stderr = export.stderr.read().decode(errors="replace") if export.stderr else ""
            raise NodeError(f"importing {name} failed: export rc {exported} {stderr[-800:]}; "
                            f"ctr rc {imported.returncode} {imported.stderr[-800:]}")
        record[name] = image_id
        record_file.write_text(json.dumps(record, indent=1))
        self._remove_replaced_images()

    def _remove_replaced_images(self) -> None:
        """A rebuilt image takes over its name; the build it replaces stays referenced by the CRI's
        ``sha256:<id>`` alias until removed here (then containerd's GC frees its snapshots)."""
        rows = [line.split() for line in self._ctr("images", "ls").stdout.splitlines()[1:]]
        digests = {row[0]: row[2] for row in rows if len(row) >= 3}
        named = {digest for ref, digest in digests.items() if not ref.startswith("sha256:")}
        stale = [ref for ref, digest in digests.items() if ref.startswith("sha256:") and digest not in named]
        if stale:
            self._ctr("images", "rm", "--sync", *stale)

    # -- internals --

    def _write_configs(self) -> None:
        d, layout = self.layout.workdir, self.layout
        (d / "containerd.toml").write_text(configs.containerd_config(layout))
        (layout.cni_conf_dir / "10-torch-isvc-node.conflist").write_text(configs.cni_config(layout))
        (d / "kubelet.json").write_text(configs.kubelet_config(layout, client_ca_file=self.client_ca_file))
        proxy = configs.kube_proxy_config(layout, kubeconfig=self.kubeconfigs["kube-proxy"])
        (d / "kube-proxy.json").write_text(proxy)

    def _ctr_argv(self, *args: str) -> list[str]:
        socket = str(self.layout.containerd_socket)
        return [str(self._binaries["ctr"]), "--address", socket, "--namespace", CRI_NAMESPACE, *args]

    def _ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._ctr_argv(*args), capture_output=True, text=True, check=False, timeout=60)

    def _remove_all_containers(self) -> None:
        for task in self._ctr("tasks", "ls", "--quiet").stdout.split():
            self._ctr("tasks", "kill", "--signal", "SIGKILL", "--all", task)
        for task in self._ctr("tasks", "ls", "--quiet").stdout.split():
            self._ctr("tasks", "delete", "--force", task)
        for container in self._ctr("containers", "ls", "--quiet").stdout.split():
            self._ctr("containers", "delete", container)
        for sandbox in self._ctr("sandboxes", "ls", "--quiet").stdout.split():
            self._ctr("sandboxes", "rm", "--force", sandbox)

    def _kill_shims(self) -> None:
        """runc shims outlive containerd by design (they are reparented to init): find ours by the socket
        address on their command line."""
        address = str(self.layout.containerd_socket)
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if argv and argv[0].endswith(b"containerd-shim-runc-v2") and address.encode() in argv:
                    os.kill(int(proc.name), 9)

    def _spawn(self, name: str, argv: list[str], env_path: Path | None = None) -> None:
        log = self.layout.workdir / f"{name}.log"
        env = dict(os.environ)
        if env_path is not None:  # containerd finds its shim on PATH
            env["PATH"] = f"{env_path}:{env['PATH']}"
        proc = popen(in_namespace(self.ns, argv), log=log, env=env, cwd=self.layout.workdir)
        self.processes.append(Process(name, proc, log))

    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            self.check_alive(f"waiting for {what}")
            if ready():
                return
            time.sleep(0.1)
        raise NodeError(f"{what} not ready after {self.startup_timeout:.0f} s\n{self.logs()}")

    def check_alive(self, during: str) -> None:
        for process in self.processes:
            if process.proc.poll() is not None:
                raise NodeError(f"{process.name} exited with {process.proc.returncode} while {during}:\n"
                                f"{process.tail()}")

    def logs(self, lines: int = 40) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail(lines)}" for p in self.processes)


def remove_tree(path: Path) -> None:
    host.unmount_under(path)
    shutil.rmtree(path, ignore_errors=True)
