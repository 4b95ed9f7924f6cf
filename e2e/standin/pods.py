"""How the stand-in kubelet turns a revision's pod template into local processes (pure functions).

A container becomes ``[python, -m, module, *args]``: the image's ENTRYPOINT (``IMAGE_ENTRYPOINTS``, the
same as the Dockerfile's targets) run with this checkout's virtual-environment Python. The pod's
volumes become directories, every ``mountPath`` prefix in args and env values is rewritten to the
volume's directory, and every port of the pod gets a free loopback port of its own (``--http-port`` and the
other PORT_FLAGS are rewritten to it) (the pod's network
namespace, in effect). A runtime container given no ``--grpc-port`` gets one, the pod's stand-in for 8081:
in a pod its default gRPC port is its own, here it would be the host's. Nothing else in args or env
changes.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: image repository (last path segment; a ``-gpu`` tag picks the ``-gpu`` target) -> (ENTRYPOINT, CMD),
#: as in the Dockerfile's targets of the same names.
IMAGE_ENTRYPOINTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "runtime": (("python", "-m", "isvc_runtime"), ("--model-store", "/mnt/models")),
    "runtime-gpu": (("python", "-m", "isvc_runtime"), ("--model-store", "/mnt/models")),
    "storage-initializer": (("python", "-m", "isvc_runtime.storage"), ()),
    "operator": (("python", "-m", "isvc_operator"), ()),
}
#: Ports TorchServe-style servers bind besides the serving port (management, metrics); each pod gets
#: its own mapping for them so two revisions never collide.
TORCHSERVE_PORTS = (8080, 8081, 8082)
#: The runtime's port flags; their values are container ports, rewritten to the pod's loopback ports.
PORT_FLAGS = ("--http-port", "--metrics-port", "--grpc-port")
#: The runtime's default gRPC port (KServe's), and the images that run the runtime.
RUNTIME_GRPC_PORT = 8081
RUNTIME_TARGETS = ("runtime", "runtime-gpu")
#: The host environment a container may see (the rest of this process's environment stays out).
PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")

SecretLookup = Callable[[str, str, str, str], str | None]  # (kind, namespace, name, key) -> value


class PodSpecError(ValueError):
    """The pod template asks for something the stand-in cannot run (message says what)."""


@dataclass(frozen=True)
class ProcessSpec:
    """One container as a local process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path


@dataclass(frozen=True)
class PodPlan:
    """What to run for one revision, in order: init containers (each to completion), then containers."""

    init: list[ProcessSpec]
    containers: list[ProcessSpec]
    ports: dict[int, int]  # container port -> loopback port
    serving_port: int  # container port of the serving container's HTTP (what the ingress proxies to)
    probe_path: str | None  # readiness probe's httpGet path; None: TCP probe (or gRPC health)
    probe_port: int  # container port the readiness probe checks
    probe_grpc_service: str | None = None  # a grpc probe: the grpc.health.v1 service it asks about
    volume_dirs: dict[str, Path] = field(default_factory=dict)
    files: dict[Path, bytes] = field(default_factory=dict)  # secret/configMap volume contents


def image_target(image: str) -> str:
    """``registry:5000/torch-isvc/runtime:0.1.0-gpu`` -> ``runtime-gpu``; ``.../storage-initializer:x``
    -> ``storage-initializer``."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    repository, _, tag = last.partition(":")
    if tag.endswith("-gpu") and f"{repository}-gpu" in IMAGE_ENTRYPOINTS:
        return f"{repository}-gpu"
    return repository


def container_argv(container: Mapping[str, Any], python: str) -> list[str]:
    """Kubernetes' rule: ``command`` replaces the ENTRYPOINT, ``args`` the CMD; ``python`` first
    becomes this environment's interpreter."""
    image = str(container.get("image", ""))
    target = image_target(image)
    if target not in IMAGE_ENTRYPOINTS:
        known = ", ".join(sorted(IMAGE_ENTRYPOINTS))
        raise PodSpecError(f"container {container.get('name')!r}: image {image!r} has no local mapping "
                           f"(known repositories: {known})")
    entrypoint, cmd = IMAGE_ENTRYPOINTS[target]
    command = list(container["command"]) if container.get("command") else list(entrypoint)
    args = list(container["args"]) if "args" in container else ([] if container.get("command") else list(cmd))
    if command and command[0] in ("python", "python3"):
        command[0] = python
    return [*command, *(str(a) for a in args)]


def map_path(value: str, mounts: Sequence[tuple[str, Path]]) -> str:
    """Rewrite a mount path (alone, as a prefix, or after ``--flag=``) to its local directory."""
    flag, eq, rest = value.partition("=")
    if eq and rest.startswith("/") and flag.startswith("-"):
        return f"{flag}={map_path(rest, mounts)}"
    for mount, local in mounts:  # longest first
        if value == mount or value.startswith(mount.rstrip("/") + "/"):
            return str(local) + value[len(mount.rstrip("/")):]
    return value


def _mounts(container: Mapping[str, Any], volume_dirs: Mapping[str, Path]) -> list[tuple[str, Path]]:
    mounts = []
    for mount in container.get("volumeMounts") or []:
        if mount["name"] not in volume_dirs:
            raise PodSpecError(f"container {container.get('name')!r} mounts unknown volume {mount['name']!r}")
        local = volume_dirs[mount["name"]]
        if mount.get("subPath"):
            local = local / mount["subPath"]
        mounts.append((str(mount["mountPath"]), local))
    return sorted(mounts, key=lambda item: len(item[0]), reverse=True)


def _port_flags(argv: list[str], ports: Mapping[int, int]) -> list[str]:
    """``--http-port N`` / ``--metrics-port=N`` (any of PORT_FLAGS) -> N's loopback port."""
    out = list(argv)
    for index, arg in enumerate(out):
        flag, eq, value = arg.partition("=")
        if flag not in PORT_FLAGS:
            continue
        if eq and value.isdigit():
            out[index] = f"{flag}={ports.get(int(value), int(value))}"
        elif not eq and index + 1 < len(out) and out[index + 1].isdigit():
            out[index + 1] = str(ports.get(int(out[index + 1]), int(out[index + 1])))
    return out


def with_grpc_port(container: Mapping[str, Any], argv: list[str], ports: Mapping[int, int]) -> list[str]:
    """A runtime container's argv (the image's ENTRYPOINT, no ``command``) with ``--grpc-port`` (its
    default's stand-in) when it names none."""
    image = str(container.get("image", ""))
    if image_target(image) not in RUNTIME_TARGETS or container.get("command"):
        return argv
    if "--grpc-port" in declared_ports(container):
        return argv
    return [*argv, "--grpc-port", str(ports[RUNTIME_GRPC_PORT])]


def declared_ports(container: Mapping[str, Any]) -> dict[str, int]:
    """The port flags in a container's args: ``{"--http-port": 8080, ...}``."""
    args = [str(a) for a in container.get("args") or []]
    found: dict[str, int] = {}
    for index, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag not in PORT_FLAGS:
            continue
        if not eq and index + 1 < len(args):
            value = args[index + 1]
        if value.isdigit():
            found[flag] = int(value)
    return found


def _declared_http_port(container: Mapping[str, Any]) -> int | None:
    return declared_ports(container).get("--http-port")


def pod_ports(spec: Mapping[str, Any], annotations: Mapping[str, str]) -> list[int]:
    """Every container port the pod may listen on: declared ports, probe ports, the scrape port, the
    port flags and TorchServe's three."""
    found: set[int] = set(TORCHSERVE_PORTS)
    for container in spec.get("containers") or []:
        for port in container.get("ports") or []:
            found.add(int(port["containerPort"]))
        probe = container.get("readinessProbe") or {}
        probe_port = (probe.get("httpGet") or probe.get("grpc") or {}).get("port")
        if isinstance(probe_port, int):
            found.add(probe_port)
        found.update(declared_ports(container).values())
    scrape = annotations.get("prometheus.io/port", "")
    if scrape.isdigit():
        found.add(int(scrape))
    return sorted(found)


def resolve_env(
    container: Mapping[str, Any], namespace: str, pod_name: str, lookup: SecretLookup
) -> dict[str, str]:
    """The container's ``env`` as the kubelet resolves it (values, secretKeyRef, configMapKeyRef and the
    pod's name/namespace fieldRefs); ``$(VAR)`` references to earlier entries are expanded."""
    if container.get("envFrom"):
        raise PodSpecError(f"container {container.get('name')!r}: envFrom is not supported by the stand-in")
    env: dict[str, str] = {}
    for entry in container.get("env") or []:
        name = entry["name"]
        if "valueFrom" not in entry:
            value = str(entry.get("value", ""))
            for key, known in env.items():
                value = value.replace(f"$({key})", known)
            env[name] = value
            continue
        source = entry["valueFrom"]
        if "fieldRef" in source:
            path = source["fieldRef"].get("fieldPath")
            fields = {"metadata.name": pod_name, "metadata.namespace": namespace}
            if path not in fields:
                raise PodSpecError(f"env {name}: fieldRef {path!r} is not supported by the stand-in")
            env[name] = fields[path]
            continue
        for kind, ref_key in (("secret", "secretKeyRef"), ("configmap", "configMapKeyRef")):
            if ref_key in source:
                ref = source[ref_key]
                value = lookup(kind, namespace, ref["name"], ref["key"])
                if value is None:
                    if ref.get("optional"):
                        break
                    raise PodSpecError(f"env {name}: {kind} {ref['name']!r} has no key {ref['key']!r}")
                env[name] = value
                break
        else:
            if not any(k in source for k in ("secretKeyRef", "configMapKeyRef")):
                raise PodSpecError(f"env {name}: valueFrom {sorted(source)} is not supported by the stand-in")
    return env


def volume_plan(
    spec: Mapping[str, Any], root: Path, namespace: str, lookup: SecretLookup
) -> tuple[dict[str, Path], dict[Path, bytes]]:
    """Each volume as a directory under ``root``; secret and configMap volumes with their files."""
    dirs: dict[str, Path] = {}
    files: dict[Path, bytes] = {}
    for volume in spec.get("volumes") or []:
        name = volume["name"]
        local = root / "volumes" / name
        dirs[name] = local
        if "emptyDir" in volume:
            continue
        for kind, key, name_key in (("secret", "secret", "secretName"), ("configmap", "configMap", "name")):
            if key in volume:
                source = volume[key]
                items = source.get("items") or []
                if not items:
                    raise PodSpecError(f"volume {name!r}: {key} volumes need explicit items in the stand-in")
                for item in items:
                    value = lookup(kind, namespace, source[name_key], item["key"])
                    if value is None:
                        if source.get("optional"):
                            continue
                        raise PodSpecError(f"volume {name!r}: {kind} {source[name_key]!r} has no key "
                                           f"{item['key']!r}")
                    files[local / item.get("path", item["key"])] = value.encode()
                break
        else:
            raise PodSpecError(f"volume {name!r}: only emptyDir, secret and configMap volumes are supported "
                               "by the stand-in")
    return dirs, files


def plan_pod(
    template: Mapping[str, Any],
    *,
    namespace: str,
    service: str,
    revision: str,
    root: Path,
    ports: Mapping[int, int],
    python: str,
    lookup: SecretLookup,
    cluster_env: Mapping[str, str] | None = None,
    host_env: Mapping[str, str] | None = None,
) -> PodPlan:
    """The processes for one revision's pod. ``ports`` maps every port of :func:`pod_ports` to a free
    loopback port; ``cluster_env`` is added to init containers (the demo cluster's environment, e.g.
    ``STORAGE_EMULATOR_HOST``); ``host_env`` supplies the passed-through variables."""
    spec = template.get("spec") or {}
    pod_name = f"{revision}-deployment-standin"
    volume_dirs, files = volume_plan(spec, root, namespace, lookup)
    base = {k: v for k, v in (host_env or {}).items() if k in PASSED_THROUGH}
    base["HOSTNAME"] = pod_name
    base["PYTHONUNBUFFERED"] = "1"

    def process(container: Mapping[str, Any], extra: Mapping[str, str], overrides: Mapping[str, str]
                ) -> ProcessSpec:
        mounts = _mounts(container, volume_dirs)
        argv = [map_path(a, mounts) for a in container_argv(container, python)]
        argv = with_grpc_port(container, _port_flags(argv, ports), ports)
        env = {k: map_path(v, mounts) for k, v in resolve_env(container, namespace, pod_name, lookup).items()}
        return ProcessSpec(str(container.get("name")), argv, {**base, **extra, **env, **overrides}, root)

    init = [process(c, cluster_env or {}, {}) for c in spec.get("initContainers") or []]
    containers_spec = spec.get("containers") or []
    if not containers_spec:
        raise PodSpecError("the pod template has no containers")
    serving = next((c for c in containers_spec if c.get("ports")), containers_spec[0])
    declared = [int(p["containerPort"]) for p in serving.get("ports") or []]
    serving_port = _declared_http_port(serving) or (declared[0] if declared else 8080)
    probe = serving.get("readinessProbe") or {}
    http_get, grpc_probe = probe.get("httpGet"), probe.get("grpc")
    probe_port = serving_port
    if grpc_probe is not None:
        probe_port = int(grpc_probe.get("port") or (declared[0] if declared else serving_port))
    if http_get is not None:
        raw = http_get.get("port", serving_port)
        if isinstance(raw, str) and not raw.isdigit():
            named = {p.get("name"): int(p["containerPort"]) for p in serving.get("ports") or []}
            if raw not in named:
                raise PodSpecError(f"readiness probe port {raw!r} names no container port")
            raw = named[raw]
        probe_port = int(raw)
    knative_env = {
        "PORT": str(ports[serving_port]),
        "K_SERVICE": service,
        "K_CONFIGURATION": service,
        "K_REVISION": revision,
        "TS_INFERENCE_ADDRESS": f"http://127.0.0.1:{ports[serving_port]}",
        "TS_MANAGEMENT_ADDRESS": f"http://127.0.0.1:{ports[8081]}",
        "TS_METRICS_ADDRESS": f"http://127.0.0.1:{ports[8082]}",
    }
    containers = [process(c, {}, knative_env if c is serving else {}) for c in containers_spec]
    return PodPlan(
        init=init,
        containers=containers,
        ports=dict(ports),
        serving_port=serving_port,
        probe_path=(http_get or {}).get("path", "/") if http_get is not None else None,
        probe_port=probe_port,
        probe_grpc_service=str(grpc_probe.get("service") or "") if grpc_probe is not None else None,
        volume_dirs=volume_dirs,
        files=files,
    )


def decode_secret_value(data: Mapping[str, str] | None, key: str) -> str | None:
    """A Secret's ``data[key]`` (base64) as text, or None."""
    if not data or key not in data:
        return None
    return base64.b64decode(data[key]).decode()
