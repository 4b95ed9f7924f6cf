"""KnativeDefaulting: a test-only stand-in for Knative Serving's defaulting admission webhook.

Real Knative mutates every Knative Service at admission, filling fields the user (here: the operator)
left unset. This stand-in is a real HTTPS admission webhook on loopback that does the same for a few of
Knative's defaults, so tests can prove those fields never make the operator write again:
`containerConcurrency: 0`, `timeoutSeconds: 300`, `enableServiceLinks: false`, and each container's
`readinessProbe.successThreshold: 1`. It registers a MutatingWebhookConfiguration scoped to one namespace
and removes it on close.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import ssl
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REVISION_DEFAULTS = {"containerConcurrency": 0, "timeoutSeconds": 300, "enableServiceLinks": False}


def defaulting_patch(ksvc: dict[str, Any]) -> list[dict[str, Any]]:
    """JSON Patch operations adding Knative's defaults that are missing from a Knative Service."""
    ops: list[dict[str, Any]] = []
    spec = ((ksvc.get("spec") or {}).get("template") or {}).get("spec")
    if spec is None:
        return ops
    for key, value in REVISION_DEFAULTS.items():
        if key not in spec:
            ops.append({"op": "add", "path": f"/spec/template/spec/{key}", "value": value})
    for index, container in enumerate(spec.get("containers") or []):
        probe = container.get("readinessProbe")
        if probe is not None and "successThreshold" not in probe:
            path = f"/spec/template/spec/containers/{index}/readinessProbe/successThreshold"
            ops.append({"op": "add", "path": path, "value": 1})
    return ops


def _self_signed(host: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "knative-defaulting-standin")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=6))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


class _Handler(BaseHTTPRequestHandler):
    calls: list[str]

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        ops = defaulting_patch(request.get("object") or {})
        self.server.calls.append(request.get("operation", ""))  # type: ignore[attr-defined]
        response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
        if ops:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                           "response": response}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


class KnativeDefaulting:
    """The webhook server plus its registration for one namespace (a context manager)."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(str(kubeconfig), client_configuration=configuration)
        client = kubernetes.client.ApiClient(configuration)
        self.admission = kubernetes.client.AdmissionregistrationV1Api(client)
        self.namespace = namespace
        self.name = f"knative-defaulting-standin-{namespace}"
        cert, key = _self_signed("127.0.0.1")
        self._dir = tempfile.TemporaryDirectory(prefix="kn-webhook-")
        (Path(self._dir.name) / "tls.crt").write_bytes(cert)
        (Path(self._dir.name) / "tls.key").write_bytes(key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(Path(self._dir.name) / "tls.crt", Path(self._dir.name) / "tls.key")
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.server.calls = []  # type: ignore[attr-defined]
        self._ca_bundle = base64.b64encode(cert).decode()
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def calls(self) -> list[str]:
        return self.server.calls  # type: ignore[attr-defined]

    def __enter__(self) -> KnativeDefaulting:
        self._thread.start()
        port = self.server.server_address[1]
        self.admission.create_mutating_webhook_configuration({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": self.name},
            "webhooks": [{
                "name": "defaulting.serving.knative.dev",
                "clientConfig": {"url": f"https://127.0.0.1:{port}/defaulting", "caBundle": self._ca_bundle},
                "rules": [{"apiGroups": ["serving.knative.dev"], "apiVersions": ["v1"],
                           "operations": ["CREATE", "UPDATE"], "resources": ["services"]}],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": self.namespace}},
                "sideEffects": "None", "admissionReviewVersions": ["v1"], "failurePolicy": "Fail",
                "timeoutSeconds": 5,
            }],
        })
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.admission.delete_mutating_webhook_configuration(self.name)
        finally:
            self.server.shutdown()
            self.server.server_close()
            self._dir.cleanup()
