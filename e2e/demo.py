"""The seed walkthrough on one machine: ``make demo`` (interactive) and ``make demo-check``.

    python -m e2e.demo            # walkthrough, then stays up and prints how to send requests (Ctrl-C)
    python -m e2e.demo --check    # walkthrough + canary step, non-interactive; exit 0 only if all pass
    --pods auto|node|processes    # where the pods run (default auto: the real node when it can start)

With its pods on the real node (e2e/node/; first line ``pods: real kubelet on node ...``), the node's control
plane replaces the local one, the operator is deploy/'s Deployment run by the kubelet from the operator
image, Knative's CRDs are installed without its webhook, revisions are Deployments (e2e/standin/
node_serving.py) and the images are e2e/images/build.sh's. Otherwise (``pods: local processes (stand-in)
because ...``), as follows.

Real: etcd + kube-apiserver + kube-controller-manager (e2e/localkube/), kubectl, the CRD and install
manifest, Knative Serving's CRDs and admission webhook (e2e/knative/webhook.py: every Knative Service is
defaulted and validated by Knative itself), the operator (``python -m isvc_operator`` with its
ServiceAccount's token), a GCS server
(gcp-storage-emulator) holding the seed's bucket, the storage initializer and the runtime (run as the
pod template says), curl. Stand-ins (e2e/standin/, see its README): Knative Serving + the kubelet
(revisions as local processes, ksvc status) and Istio's gateways (a Host-routing ingress on loopback).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from e2e import REPO_ROOT
from e2e.inference_services import (
    KNATIVE_SERVICES,
    predictor_service,
    predictor_status,
    ready_isvc,
)
from e2e.installation import EXAMPLES, OPERATOR_ACCOUNT, OPERATOR_NAMESPACE, OperatorProcess, install
from e2e.knative.webhook import APISERVER_FLAGS, KnativeWebhook, install_crds
from e2e.localkube import ControlPlane, Kubectl
from e2e.polling import wait_for
from e2e.processes import (
    LoggedProcess,
    free_port,
    install_signal_handlers,
    owned_workdir,
    pid_alive,
    sweep_stale_workdirs,
    tail,
)
from e2e.standin.ingress import REVISION_HEADER, Ingress
from e2e.standin.node_serving import NodeServingStandin
from e2e.standin.serving import ServingStandin

if TYPE_CHECKING:
    from e2e.node.node import RealNode

NAMESPACE = "kfserving-test"  # the seed's namespace (its Host header: torchserve.kfserving-test.example.com)
BUCKET = "kfserving-examples"
MODEL_PREFIX = "models/torchserve/image_classifier"
MODEL_URI = f"gs://{BUCKET}/{MODEL_PREFIX}"
CANARY_URI = f"{MODEL_URI}/v2"
MODEL_NAME = "mnist"
CANARY_PERCENT = 20
CANARY_TOLERANCE = 4.0
CANARY_REQUESTS = 2000
VENV_BIN = Path(sys.executable).parent
WORKDIR_PREFIX = "torch-isvc-demo-"
# Where the walkthrough's pods run: "auto" (the real node when it can start, else local processes), or either.
AUTO, NODE, PROCESSES = "auto", "node", "processes"
NODE_IMAGES = ("pause", "storage-initializer", "runtime", "operator")
OPERATOR_DEPLOYMENT = "torch-isvc-operator"


class NodeUnavailable(RuntimeError):
    """``--pods node`` was asked for and the node cannot start (the message says why)."""


def pods_mode(preference: str, problem: str | None, node_name: str = "") -> tuple[str, str]:
    """Where the pods run (NODE or PROCESSES) and the line that says so, from the ``--pods`` preference and
    why the node cannot start (None: it started, as ``node_name``)."""
    if preference not in (AUTO, NODE, PROCESSES):
        raise ValueError(f"--pods {preference!r}: one of {AUTO}, {NODE}, {PROCESSES}")
    if preference == PROCESSES:
        return PROCESSES, "pods: local processes (stand-in) because --pods processes was asked for"
    if problem is None:
        return NODE, (f"pods: real kubelet on node {node_name} (containerd + runc, the images of "
                      "e2e/images/build.sh; Knative's controllers: e2e/standin/node_serving.py)")
    if preference == NODE:
        raise NodeUnavailable(f"--pods node: {problem}")
    return PROCESSES, f"pods: local processes (stand-in) because {problem}"


# CPU the walkthrough's pods request on the node: the operator's 2 replicas (100m each, deploy/operator.yaml)
# and torchserve.yaml's predictor (1 CPU, the operator's default); the canary step adds canary.yaml's (1 CPU).
WALKTHROUGH_CPU, CANARY_CPU = 1.2, 1.0


def node_problem(euid: int, missing_binaries: str | None, cpus: int, needed_cpu: float) -> str | None:
    """Why a node cannot even be tried here (None: try it): it needs root, the binaries of `make node`, and
    as many CPUs as the pods request (the node's capacity is this machine's)."""
    if euid != 0:
        return "the real node needs root (network namespaces, cgroups, mounts)"
    if missing_binaries:
        return missing_binaries
    if cpus < needed_cpu:
        return (f"the walkthrough's pods request {needed_cpu:g} CPUs and the node would have {cpus} "
                "(this machine's)")
    return None


def start_demo_node(preference: str, needed_cpu: float) -> tuple[RealNode | None, str]:
    """The real node when ``preference`` allows and it starts (with the images the walkthrough runs), and
    the line saying where the pods run."""
    if preference == PROCESSES:
        return None, pods_mode(preference, None)[1]
    from e2e.node.components import NodeError, node_binaries
    from e2e.node.node import start_node

    missing = None
    try:
        node_binaries()
    except NodeError as exc:
        missing = str(exc)
    problem = node_problem(os.geteuid(), missing, os.cpu_count() or 1, needed_cpu)
    node = None
    if problem is None:
        try:
            node = start_node(images=NODE_IMAGES)
        except (NodeError, OSError, subprocess.CalledProcessError) as exc:
            problem = f"the real node did not start: {str(exc).splitlines()[0] if str(exc) else exc!r}"
    _, line = pods_mode(preference, problem, node.layout.name if node else "")
    return node, line


def shared_dir() -> Path:
    return Path(os.environ.get("TORCH_ISVC_SHARED_DIR") or REPO_ROOT.parent / "shared")


def shape(value: Any) -> list[int]:
    """[1][1][28][28]-style shape of nested lists (the first element's, at each level)."""
    dims = []
    while isinstance(value, list):
        dims.append(len(value))
        value = value[0] if value else None
    return dims


def own_sample_request(digit_png: bytes | None = None) -> dict[str, Any]:
    """The project's own request when ../shared is absent: a hand-drawn "2" (strokes drawn here, no
    MNIST data), base64 PNG in the seed's v1 shape."""
    if digit_png is None:
        from PIL import Image, ImageDraw, ImageFilter

        image = Image.new("L", (28, 28), 0)
        draw = ImageDraw.Draw(image)
        draw.arc((7, 4, 21, 16), start=180, end=30, fill=255, width=3)
        draw.line((20, 12, 8, 22), fill=255, width=3)
        draw.line((7, 22, 22, 22), fill=255, width=3)
        image = image.filter(ImageFilter.GaussianBlur(0.6))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        digit_png = buffer.getvalue()
    return {"instances": [{"data": base64.b64encode(digit_png).decode()}]}


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 200 <= response.status < 300
    except OSError:
        return False


# --- the environment ----------------------------------------------------------------------------


@dataclass
class Walkthrough:
    """Everything the walkthrough runs, started in order by :meth:`start` and stopped by :meth:`stop`."""

    workdir: Path
    say: Callable[[str], None] = print
    ingress_port: int | None = None
    cluster: ControlPlane | None = None
    knative: KnativeWebhook | None = None
    operator: OperatorProcess | None = None
    emulator: LoggedProcess | None = None
    standin: ServingStandin | NodeServingStandin | None = None
    ingress: Ingress | None = None
    node: RealNode | None = None  # given: the pods run on this real node (its owner stops it)
    gcs_host: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    _pids: set[int] = field(default_factory=set)
    _on_node: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    # -- lifecycle --

    def start(self) -> Walkthrough:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.node is not None:
            return self._start_on_node()
        with self._timed("control plane"):
            self.cluster = ControlPlane(apiserver_flags=APISERVER_FLAGS).start()
            self._pids.update(self.cluster.pids.values())
            self.say(f"control plane: Kubernetes {self.cluster.server_version().get('gitVersion')} at "
                     f"{self.cluster.server}")
        with self._timed("install"):
            self.install()
        with self._timed("model stores"):
            self.start_storage()
        with self._timed("operator"):
            self.start_operator()
        self.standin = ServingStandin(self.cluster.kubeconfig, self.workdir / "pods",
                                      cluster_env={"STORAGE_EMULATOR_HOST": self.gcs_host}).start()
        self.ingress = Ingress(self.cluster.kubeconfig, self.standin, port=self.ingress_port).start()
        self.say(f"stand-ins: Knative Serving + kubelet (pods under {self.workdir / 'pods'}), "
                 f"ingress on {self.ingress.url}")
        return self

    def _start_on_node(self) -> Walkthrough:
        """The same walkthrough with its pods on the real node: the node's control plane; Knative's and
        Istio's CRDs (Knative's webhook is not run there: it reaches a loopback apiserver); crds/ and deploy/,
        whose operator Deployment the kubelet runs from the operator image; the GCS emulator in the node's
        namespace (storage initializers get STORAGE_EMULATOR_HOST from a MutatingAdmissionPolicy);
        NodeServingStandin (revisions as Deployments) and the ingress, which reaches the revisions'
        ClusterIPs through a host route to the node's Service range."""
        from e2e.node.workloads import emulator_policy

        assert self.node is not None
        query = "jsonpath={.clusters[0].cluster.server}"
        server = self.kubectl("config", "view", "--minify", "-o", query).stdout
        self.say(f"control plane: on node {self.node.layout.name} at {server}")
        with self._timed("install"):
            install_crds(self.kubectl)
            self.say("installed: Knative Serving's and Istio's CRDs (no Knative webhook on the node)")
            self.install_product()
        with self._timed("model stores"):
            self.start_storage()
            self.node.kubectl("apply", "-f", "-", input="\n---\n".join(
                json.dumps(d) for d in emulator_policy(self.gcs_host)))
        with self._timed("operator"):
            wait_for(self._operator_ready, 180, "the operator Deployment's replicas ready")
            self.say(f"operator: the Deployment {OPERATOR_NAMESPACE}/{OPERATOR_DEPLOYMENT} (operator image) "
                     "on the node")
        self._on_node.enter_context(self.node.services_from_host())
        self.standin = NodeServingStandin(self.kubeconfig).start()
        self.ingress = Ingress(self.kubeconfig, self.standin, port=self.ingress_port).start()
        self.say(f"stand-ins: Knative Serving's controllers (revisions as Deployments on the node), "
                 f"ingress on {self.ingress.url}")
        return self

    def _operator_ready(self) -> bool:
        deployment = self.kubectl.get("-n", OPERATOR_NAMESPACE, "deployment", OPERATOR_DEPLOYMENT) or {}
        status, spec = deployment.get("status") or {}, deployment.get("spec") or {}
        return bool(spec) and status.get("readyReplicas") == spec.get("replicas") \
            and status.get("updatedReplicas") == spec.get("replicas")

    def stop(self) -> None:
        """Stop everything (ingress, revision processes, operator, GCS, control plane); one part failing
        to stop does not keep the others running."""
        if isinstance(self.standin, ServingStandin):
            self._pids.update(self.standin.all_pids())
        parts: list[Callable[[], None]] = [
            part.stop for part in (self.ingress, self.standin, self.operator, self.emulator, self.knative,
                                   self.cluster)
            if part is not None
        ]
        parts.append(self._on_node.close)
        errors = []
        for stop_part in parts:
            try:
                stop_part()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise RuntimeError(f"stopping the walkthrough: {errors}")

    def leftover_pids(self) -> list[int]:
        """Processes this walkthrough started that are still alive (empty after a clean stop)."""
        return sorted(pid for pid in self._pids if pid_alive(pid))

    @contextlib.contextmanager
    def _timed(self, what: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        self.timings[what] = time.monotonic() - started

    # -- kubectl --

    @property
    def kubeconfig(self) -> Path:
        if self.node is not None:
            return self.node.kubeconfig
        assert self.cluster is not None
        return self.cluster.kubeconfig

    @property
    def kubectl(self) -> Kubectl:
        if self.node is not None:
            return Kubectl(self.node.kubeconfig, self.node.layout.workdir / "kubectl-cache")
        assert self.cluster is not None
        return self.cluster.kubectl

    # -- setup steps --

    def install(self) -> None:
        self.knative = KnativeWebhook(self.kubeconfig)
        self.knative.start()
        assert self.knative.proc is not None
        self._pids.add(self.knative.proc.pid)
        self.say(f"installed: Knative Serving {self.knative.version}'s CRDs and admission webhook "
                 "(+ Istio's VirtualService CRD)")
        self.install_product()

    def install_product(self) -> None:
        install(self.kubectl)
        self.say("installed: crds/, deploy/")
        # The demo cluster has Istio (the ingress stand-in): the operator's ingress mode is istio.
        config = self.kubectl.get("-n", OPERATOR_NAMESPACE, "configmap", "inferenceservice-config") or {}
        ingress = json.loads((config.get("data") or {}).get("ingress") or "{}")
        if ingress.get("mode") != "istio":
            ingress["mode"] = "istio"
            patch = {"data": {"ingress": json.dumps(ingress, indent=2)}}
            self.kubectl("-n", OPERATOR_NAMESPACE, "patch", "configmap", "inferenceservice-config",
                         "--type=merge", "-p", json.dumps(patch))
            self.say('configured: inferenceservice-config ingress.mode "istio" (this cluster has an ingress)')

    def start_storage(self) -> None:
        stores = self.workdir / "stores"
        for name, version in (("v1", "1.0"), ("v2", "2.0")):
            subprocess.run([sys.executable, str(EXAMPLES / "build_model_store.py"), str(stores / name),
                            "--version", version], check=True, capture_output=True, text=True)
        port = free_port()
        address = "127.0.0.1" if self.node is None else str(self.node.ns.address.ip)  # where pods reach it
        self.gcs_host = f"http://{address}:{port}"
        argv = [str(VENV_BIN / "gcp-storage-emulator"), "start", "--host", address, "--port", str(port),
                "-M", "-q"]
        if self.node is not None:
            from e2e.node.components import in_namespace

            argv = in_namespace(self.node.ns, argv)
        self.emulator = emulator = LoggedProcess(argv, self.workdir / "logs" / "gcs.log")
        self._pids.add(emulator.process.pid)
        wait_for(lambda: emulator.alive() and http_ok(f"{self.gcs_host}/storage/v1/b?project=demo"), 30,
                 "the GCS emulator")
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        client = storage.Client(project="demo", credentials=AnonymousCredentials(),
                                client_options={"api_endpoint": self.gcs_host})
        bucket = client.create_bucket(BUCKET)
        for name, prefix in (("v1", MODEL_PREFIX), ("v2", f"{MODEL_PREFIX}/v2")):
            for path in sorted(p for p in (stores / name).rglob("*") if p.is_file()):
                key = f"{prefix}/{path.relative_to(stores / name).as_posix()}"
                bucket.blob(key).upload_from_filename(path)
        self.say(f"model stores: {MODEL_URI} (mnist 1.0) and {CANARY_URI} (mnist 2.0) on a GCS emulator at "
                 f"{self.gcs_host}")

    def start_operator(self) -> None:
        assert self.cluster is not None
        kubeconfig = wait_for(lambda: self._sa_kubeconfig(), 30, "the operator's ServiceAccount")
        self.operator = OperatorProcess(kubeconfig, self.workdir / "logs" / "operator.log")
        try:
            self.operator.start()
        finally:
            if self.operator.pid is not None:
                self._pids.add(self.operator.pid)
        self.say(f"operator: python -m isvc_operator as ServiceAccount "
                 f"{OPERATOR_NAMESPACE}/{OPERATOR_ACCOUNT}")

    def _sa_kubeconfig(self) -> Path | None:
        assert self.cluster is not None
        try:
            return self.cluster.service_account_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT,
                                                           self.workdir / "operator.kubeconfig")
        except RuntimeError:
            return None

    # -- the walkthrough's actions --

    def apply(self, manifest: Path, namespace: str = NAMESPACE) -> str:
        if self.kubectl.get("namespace", namespace) is None:
            self.kubectl("create", "namespace", namespace)
        return self.kubectl("apply", "-n", namespace, "-f", str(manifest)).stdout.strip()

    def wait_ready(self, name: str, namespace: str = NAMESPACE, timeout: float = 120.0,
                   revision: str | None = None) -> dict[str, Any]:
        """Wait for Ready (and, when given, for ``revision`` to be the latest ready one)."""

        def probe() -> dict[str, Any] | None:
            isvc = ready_isvc(self.kubectl, namespace, name)
            if isvc is None or revision is None:
                return isvc
            return isvc if predictor_status(isvc).get("latestReadyRevision") == revision else None

        try:
            return wait_for(probe, timeout, f"isvc {namespace}/{name} to be Ready")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.diagnose(namespace)}") from None

    def diagnose(self, namespace: str = NAMESPACE) -> str:
        """What the isvc, ksvc and revision pods say (for failure messages)."""
        parts = [self.kubectl("get", "-n", namespace, f"isvc,{KNATIVE_SERVICES}", "-o", "yaml",
                              check=False).stdout[-3000:]]
        if isinstance(self.standin, ServingStandin):
            for (ns, revision), pod in sorted(self.standin.pods.items()):
                if ns == namespace:
                    parts.append(f"revision {revision}: {pod.state} {pod.message}\n{pod.log_tail()}")
        if self.node is not None:
            parts.append(self.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout)
            parts.append(self.kubectl("logs", "-n", OPERATOR_NAMESPACE, f"deployment/{OPERATOR_DEPLOYMENT}",
                                      "--tail=20", check=False).stdout)
        if self.operator is not None:
            parts.append(f"--- operator log ---\n{tail(self.operator.log, 20)}")
        return "\n".join(parts)

    def service_hostname(self, name: str = "torchserve", namespace: str = NAMESPACE) -> str:
        """The seed's ``kubectl get inferenceservice NAME -o jsonpath='{.status.url}' | cut -d "/" -f 3``."""
        url = self.kubectl("get", "-n", namespace, "inferenceservice", name, "-o",
                           "jsonpath={.status.url}").stdout
        return url.split("/")[2] if url.count("/") >= 2 else ""

    def curl_argv(self, host: str, path: str, data: Path) -> list[str]:
        assert self.ingress is not None
        return ["curl", "-sS", "-H", f"Host: {host}", f"{self.ingress.url}{path}", "-d", f"@{data}"]

    def curl(self, host: str, path: str, data: Path) -> tuple[int, str]:
        """The seed's curl (real curl) against the ingress; (HTTP status, body)."""
        argv = [*self.curl_argv(host, path, data), "-w", "\n%{http_code}"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            return 0, proc.stderr.strip()
        body, _, code = proc.stdout.rpartition("\n")
        return int(code or 0), body

    def send_many(self, host: str, path: str, body: bytes, count: int, concurrency: int = 8
                  ) -> tuple[Counter[str], Counter[str]]:
        """``count`` POSTs through the ingress: (requests per revision, answers by status and body)."""
        assert self.ingress is not None
        url = f"{self.ingress.url}{path}"

        async def run() -> tuple[Counter[str], Counter[str]]:
            revisions: Counter[str] = Counter()
            answers: Counter[str] = Counter()
            queue = list(range(count))
            async with httpx.AsyncClient(timeout=120) as client:
                async def worker() -> None:
                    while queue:
                        queue.pop()
                        response = await client.post(url, content=body, headers={"Host": host})
                        revisions[response.headers.get(REVISION_HEADER, "?")] += 1
                        answers[f"{response.status_code} {response.text.strip()}"] += 1

                await asyncio.gather(*(worker() for _ in range(concurrency)))
            return revisions, answers

        return asyncio.run(run())


# --- the walkthrough's steps and checks ---------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


class Steps:
    def __init__(self, env: Walkthrough, request: Path, say: Callable[[str], None] = print) -> None:
        self.env = env
        self.request = request
        self.say = say
        self.checks: list[Check] = []

    def check(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, ok, detail))
        self.say(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
        return ok

    def show(self, argv: list[str], output: str) -> None:
        self.say(f"$ {shlex.join(argv)}\n{output}")

    def create(self) -> None:
        output = self.env.apply(EXAMPLES / "torchserve.yaml")
        self.show(["kubectl", "apply", "-n", NAMESPACE, "-f", "torchserve.yaml"], output)
        self.check("apply", output == "inferenceservice.serving.kubeflow.org/torchserve created", output)

    def ready(self) -> None:
        try:
            self.env.wait_ready("torchserve")
            ready = True
        except TimeoutError as exc:
            ready = False
            self.say(str(exc))
        table = self.env.kubectl("get", "-n", NAMESPACE, "isvc", "torchserve").stdout.rstrip()
        self.show(["kubectl", "get", "-n", NAMESPACE, "isvc", "torchserve"], table)
        isvc = self.env.kubectl.get("-n", NAMESPACE, "isvc", "torchserve") or {}
        url = (isvc.get("status") or {}).get("url", "")
        self.check("READY True", ready, "Ready condition True" if ready else "not Ready")
        expected = f"http://torchserve.{NAMESPACE}.example.com"
        self.check("URL", url == expected, f"status.url {url!r} (the walkthrough expects {expected!r})")

    def predict(self) -> None:
        host = self.env.service_hostname()
        status, body = self.env.curl(host, f"/v1/models/{MODEL_NAME}:predict", self.request)
        self.show(self.env.curl_argv(host, f"/v1/models/{MODEL_NAME}:predict", self.request), body)
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        self.check("predict", status == 200 and answer == {"predictions": [2]},
                   f"HTTP {status} {body[:200]} (the walkthrough expects {{\"predictions\": [2]}})")

    def explain(self) -> None:
        host = self.env.service_hostname()
        status, body = self.env.curl(host, f"/v1/models/{MODEL_NAME}:explain", self.request)
        shown = body if len(body) <= 300 else f"{body[:300]}... ({len(body)} bytes)"
        self.show(self.env.curl_argv(host, f"/v1/models/{MODEL_NAME}:explain", self.request), shown)
        try:
            explanations = json.loads(body).get("explanations")
        except (ValueError, AttributeError):
            explanations = None
        dims = shape(explanations) if explanations is not None else []
        self.check("explain", status == 200 and dims == [1, 1, 28, 28],
                   f"HTTP {status}, explanations of shape {dims} (the walkthrough expects [1, 1, 28, 28])")

    def canary(self, requests: int = CANARY_REQUESTS) -> None:
        before = self.env.kubectl.get("-n", NAMESPACE, "isvc", "torchserve") or {}
        stable = predictor_status(before).get("latestReadyRevision")
        output = self.env.apply(EXAMPLES / "canary.yaml")
        self.show(["kubectl", "apply", "-n", NAMESPACE, "-f", "canary.yaml"], output)
        ksvc = wait_for(lambda: self._new_revision(stable), 60, "the canary's revision")
        try:
            self.env.wait_ready("torchserve", revision=ksvc)
        except TimeoutError as exc:
            self.check("canary ready", False, str(exc).splitlines()[0])
            return
        table = self.env.kubectl("get", "-n", NAMESPACE, "isvc", "torchserve").stdout.rstrip()
        self.show(["kubectl", "get", "-n", NAMESPACE, "isvc", "torchserve"], table)
        assert self.env.ingress is not None
        self.env.ingress.update_routes()
        host = self.env.service_hostname()
        revisions, answers = self.env.send_many(host, f"/v1/models/{MODEL_NAME}:predict",
                                                self.request.read_bytes(), requests)
        share = 100.0 * revisions.get(ksvc, 0) / requests
        self.say(f"{requests} predictions through the ingress: {dict(revisions)}; answers {dict(answers)}")
        good = answers.get('200 {"predictions":[2]}', 0) + answers.get('200 {"predictions": [2]}', 0)
        self.check("canary answers", good == requests, f"{good}/{requests} answered {{\"predictions\": [2]}}")
        self.check("canary split", abs(share - CANARY_PERCENT) <= CANARY_TOLERANCE,
                   f"{share:.1f}% to the canary revision {ksvc}, {100 - share:.1f}% to {stable} "
                   f"(the walkthrough expects {CANARY_PERCENT}% ± {CANARY_TOLERANCE:.0f})")

    def _new_revision(self, stable: str | None) -> str | None:
        ksvc = self.env.kubectl.get("-n", NAMESPACE, KNATIVE_SERVICES, predictor_service("torchserve"))
        latest = ((ksvc or {}).get("status") or {}).get("latestCreatedRevisionName")
        return latest if latest and latest != stable else None


def mnist_request(workdir: Path) -> Path:
    """../shared/data/requests/v1/mnist.json, else the project's own sample written to ``workdir``."""
    shared = shared_dir() / "data" / "requests" / "v1" / "mnist.json"
    if shared.is_file():
        return shared
    path = workdir / "mnist.json"
    path.write_text(json.dumps(own_sample_request()))
    return path


def print_usage(env: Walkthrough, request: Path) -> None:
    assert env.ingress is not None
    host = env.service_hostname() or f"torchserve.{NAMESPACE}.example.com"
    url = "http://${INGRESS_HOST}:${INGRESS_PORT}/v1/models/mnist"
    lines = [
        "",
        "The demo is up. In another shell:",
        "",
        f"  export KUBECONFIG={env.kubeconfig}",
        f"  alias kubectl={VENV_BIN / 'kubectl'}",
        f"  kubectl get isvc -n {NAMESPACE}",
        f"  INGRESS_HOST=127.0.0.1 INGRESS_PORT={env.ingress.port}",
        f"  SERVICE_HOSTNAME=$(kubectl get inferenceservice torchserve -n {NAMESPACE} "
        """-o jsonpath='{.status.url}' | cut -d "/" -f 3)""",
        f'  curl -H "Host: ${{SERVICE_HOSTNAME}}" {url}:predict -d @{request}',
        f'  curl -H "Host: ${{SERVICE_HOSTNAME}}" {url}:explain -d @{request}',
        f"  kubectl apply -n {NAMESPACE} -f {EXAMPLES / 'canary.yaml'}  # the canary: 20% to v2",
        "",
        f"SERVICE_HOSTNAME is {host} now. " + (
            f"Revision pods: kubectl get pods -n {NAMESPACE}" if env.node is not None
            else f"Revision processes and their logs: {env.workdir / 'pods'}"),
        "Ctrl-C stops everything.",
    ]
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="non-interactive, with the canary step; "
                        "exit 0 only when every output is as the seed says")
    parser.add_argument("--ingress-port", type=int, default=None, help="the ingress's loopback port")
    parser.add_argument("--canary-requests", type=int, default=CANARY_REQUESTS)
    parser.add_argument("--pods", choices=(AUTO, NODE, PROCESSES), default=AUTO,
                        help="where the pods run: the real node (e2e/node/) when it can start, else local "
                        "processes (auto, the default), or either one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even where SIGINT was ignored
    install_signal_handlers()
    started = time.monotonic()
    sweep_stale_workdirs(WORKDIR_PREFIX)  # of demos that were SIGKILLed (their processes died with them)
    workdir = owned_workdir(WORKDIR_PREFIX)
    try:
        node, mode_line = start_demo_node(args.pods, WALKTHROUGH_CPU + (CANARY_CPU if args.check else 0))
    except NodeUnavailable as exc:
        print(f"demo: {exc}", file=sys.stderr, flush=True)
        shutil.rmtree(workdir, ignore_errors=True)
        return 1
    print(mode_line, flush=True)
    env = Walkthrough(workdir, ingress_port=args.ingress_port, node=node)
    steps: Steps | None = None
    failed_setup = False
    try:
        env.start()
        request = mnist_request(workdir)
        print(f"request: {request}" + ("" if request.parent != workdir else
                                       " (the project's own sample, a hand-drawn 2: ../shared is absent)"))
        steps = Steps(env, request)
        for step in (steps.create, steps.ready, steps.predict, steps.explain):
            step()
        if args.check:
            steps.canary(args.canary_requests)
        else:
            print_usage(env, request)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping", flush=True)
    except Exception as exc:
        failed_setup = True
        print(f"demo: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    finally:
        try:
            env.stop()
        except RuntimeError as exc:
            failed_setup = True
            print(f"demo: {exc}", file=sys.stderr, flush=True)
        if node is not None:
            node.stop()
        left = env.leftover_pids()
        if left:
            print(f"demo: processes left behind: {left}", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    checks = steps.checks if steps is not None else []
    failed = [c for c in checks if not c.ok]
    if args.check:
        print(f"\nsetup: {', '.join(f'{k} {v:.1f}s' for k, v in env.timings.items())}; "
              f"total {elapsed:.0f}s")
        print(f"demo-check: {len(checks) - len(failed)}/{len(checks)} checks passed"
              + (f"; FAILED: {', '.join(c.name for c in failed)}" if failed else ""))
    return 1 if failed or failed_setup or left or (args.check and not checks) else 0


if __name__ == "__main__":
    sys.exit(main())
