"""Operator benchmark on the local control plane (etcd + kube-apiserver + controller-manager).

Measures, with the operator running as a local process under its manifest's ServiceAccount:
  1. apply -> Knative Service created latency, p50/p99 over N isvcs created one after another;
  2. the time to reconcile M isvcs from a cold operator start (all ksvcs exist, all statuses written);
  3. the operator's peak RSS (VmHWM) once it holds M isvcs;
  4. a restart over M reconciled isvcs: time until each is re-verified, and how many objects it wrote.
No Knative stand-in and no Knative webhook run (Knative's real CRDs are installed): this measures the
operator's own work (render, apply, status).

    .venv/bin/python bench/operator_bench.py [--latency-count 200] [--cold-count 500]
"""

from __future__ import annotations

import argparse
import os
import platform
import queue
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from e2e.knative.webhook import install_crds  # noqa: E402
from e2e.localkube import ControlPlane  # noqa: E402
from e2e.processes import free_port, install_signal_handlers  # noqa: E402

NAMESPACE = "bench"
KSVC = ("serving.knative.dev", "v1", "services")
ISVC = ("serving.kubeflow.org", "v1beta1", "inferenceservices")
NO_CHANGES = re.compile(rf"reconciled {NAMESPACE}/(\S+): no changes")


def kubectl(cp: ControlPlane, *args: str) -> None:
    binary = Path(sys.executable).parent / "kubectl"
    subprocess.run([str(binary), f"--kubeconfig={cp.kubeconfig}", *args], check=True, capture_output=True)


def isvc(name: str) -> dict[str, Any]:
    return {"apiVersion": "serving.kubeflow.org/v1beta1", "kind": "InferenceService",
            "metadata": {"name": name, "annotations": {"autoscaling.knative.dev/target": "10"}},
            "spec": {"predictor": {"pytorch": {
                "storageUri": "gs://kfserving-examples/models/torchserve/image_classifier"}}}}


class Operator:
    def __init__(self, kubeconfig: Path, log: Path, log_level: str = "INFO") -> None:
        self.kubeconfig, self.log, self.port = kubeconfig, log, free_port()
        self.log_level = log_level
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig),
               "ISVC_OPERATOR_NAMESPACE": "torch-isvc-system",
               "ISVC_LIVENESS_ENDPOINT": f"http://127.0.0.1:{self.port}/healthz",
               "ISVC_OPERATOR_LOG_LEVEL": self.log_level}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "isvc_operator"], env=env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("operator did not become live")

    def peak_rss_mib(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def watch_ksvc_additions(api: kubernetes.client.CustomObjectsApi, seen: queue.Queue[tuple[str, float]],
                         stop: threading.Event) -> None:
    version = api.list_namespaced_custom_object(*KSVC[:2], NAMESPACE, KSVC[2])["metadata"]["resourceVersion"]
    while not stop.is_set():
        stream = kubernetes.watch.Watch().stream(api.list_namespaced_custom_object, *KSVC[:2], NAMESPACE,
                                                 KSVC[2], resource_version=version, timeout_seconds=2)
        for event in stream:
            version = event["object"]["metadata"]["resourceVersion"]
            if event["type"] == "ADDED":
                seen.put((event["object"]["metadata"]["name"], time.perf_counter()))


def latency(api: kubernetes.client.CustomObjectsApi, count: int) -> list[float]:
    seen: queue.Queue[tuple[str, float]] = queue.Queue()
    stop = threading.Event()
    watcher = threading.Thread(target=watch_ksvc_additions, args=(api, seen, stop), daemon=True)
    watcher.start()
    time.sleep(0.5)
    samples = []
    for i in range(count):
        name = f"lat-{i:04d}"
        started = time.perf_counter()
        api.create_namespaced_custom_object(*ISVC[:2], NAMESPACE, ISVC[2], isvc(name))
        while True:
            ksvc, at = seen.get(timeout=60)
            if ksvc == f"{name}-predictor-default":
                samples.append(at - started)
                break
    stop.set()
    return samples


def reconciled(api: kubernetes.client.CustomObjectsApi, total: int) -> bool:
    ksvcs = api.list_namespaced_custom_object(*KSVC[:2], NAMESPACE, KSVC[2])["items"]
    if len(ksvcs) < total:
        return False
    isvcs = api.list_namespaced_custom_object(*ISVC[:2], NAMESPACE, ISVC[2])["items"]
    return sum(1 for item in isvcs if (item.get("status") or {}).get("observedGeneration")) >= total


def resource_versions(api: kubernetes.client.CustomObjectsApi) -> dict[str, str]:
    found = {}
    for group, version, plural in (ISVC, KSVC):
        for item in api.list_namespaced_custom_object(group, version, NAMESPACE, plural)["items"]:
            found[f"{plural}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
    return found


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency-count", type=int, default=200)
    parser.add_argument("--cold-count", type=int, default=500)
    parser.add_argument("--log", type=Path, default=REPO_ROOT / "bench" / "out" / "operator_bench.log")
    args = parser.parse_args()
    args.log.parent.mkdir(parents=True, exist_ok=True)
    install_signal_handlers()
    cp = ControlPlane().start()
    operator: Operator | None = None
    try:
        install_crds(cp.kubectl)  # Knative's and Istio's real CRDs, from the Go module cache (no webhook)
        kubectl(cp, "apply", "-f", str(REPO_ROOT / "crds"), "-f", str(REPO_ROOT / "deploy"))
        kubectl(cp, "wait", "--for=condition=Established", "--timeout=60s",
                "crd/inferenceservices.serving.kubeflow.org", "crd/services.serving.knative.dev")
        kubectl(cp, "create", "namespace", NAMESPACE)
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(str(cp.kubeconfig), client_configuration=configuration)
        api = kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(configuration))
        account = cp.service_account_kubeconfig("torch-isvc-system", "torch-isvc-operator")
        operator = Operator(account, args.log)
        operator.start()

        samples = latency(api, args.latency_count)
        operator.stop()

        for i in range(args.cold_count - args.latency_count):
            api.create_namespaced_custom_object(*ISVC[:2], NAMESPACE, ISVC[2], isvc(f"cold-{i:04d}"))
        api.delete_collection_namespaced_custom_object(*KSVC[:2], NAMESPACE, KSVC[2])  # all to do again
        while api.list_namespaced_custom_object(*KSVC[:2], NAMESPACE, KSVC[2])["items"]:
            time.sleep(0.2)
        started = time.perf_counter()
        operator = Operator(operator.kubeconfig, args.log)
        operator.start()
        while not reconciled(api, args.cold_count):
            time.sleep(0.25)
        cold = time.perf_counter() - started
        time.sleep(2)
        rss = operator.peak_rss_mib()

        operator.stop()
        before = resource_versions(api)
        restart_log = args.log.with_name("operator_bench_restart.log")
        restart_log.unlink(missing_ok=True)
        restarted = time.perf_counter()
        operator = Operator(operator.kubeconfig, restart_log, log_level="DEBUG")
        operator.start()
        while len(set(NO_CHANGES.findall(restart_log.read_text()))) < args.cold_count:
            time.sleep(0.25)
        verified = time.perf_counter() - restarted
        after = resource_versions(api)
        writes = sum(1 for key, version in after.items() if before.get(key) != version)

        cpu = platform.processor() or platform.machine()
        print(f"\nmachine: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
              f"control plane {cp.server_version().get('gitVersion')}")
        print("| measure | value |")
        print("| --- | --- |")
        p50, p99 = statistics.median(samples) * 1000, percentile(samples, 0.99) * 1000
        print(f"| apply -> ksvc created, p50 (n={len(samples)}) | {p50:.0f} ms |")
        print(f"| apply -> ksvc created, p99 (n={len(samples)}) | {p99:.0f} ms |")
        print(f"| cold start -> {args.cold_count} isvcs reconciled (ksvcs created, status written) "
              f"| {cold:.1f} s |")
        print(f"| operator peak RSS with {args.cold_count} isvcs | {rss:.0f} MiB |")
        print(f"| restart with {args.cold_count} reconciled isvcs -> all re-verified | {verified:.1f} s |")
        print(f"| ... objects written by that restart (isvc + ksvc resourceVersions changed) | {writes} |")
        return 0
    finally:
        if operator is not None:
            operator.stop()
        cp.stop()


if __name__ == "__main__":
    raise SystemExit(main())
