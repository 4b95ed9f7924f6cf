"""A local Kubernetes for the tests, the demo and the benchmarks: real etcd, kube-apiserver and
kube-controller-manager built from the pinned Go modules (``make cluster``), on loopback, owned by the
process that starts them. ``python -m e2e.localkube`` (``make cluster-up``) runs one until Ctrl-C.

- :mod:`.control_plane`: :class:`ControlPlane` (the processes, their flags, further components and
  manifests), the binaries' cache;
- :mod:`.certificates`: the CA, serving and client certificates, the service-account key;
- :mod:`.kubectl`: kubeconfig files and :class:`Kubectl`, the real kubectl against one cluster;
- :mod:`.__main__`: the command line.
"""

from .control_plane import BinariesMissing, Component, ControlPlane, ControlPlaneError
from .kubectl import Kubectl, KubectlError

__all__ = ["BinariesMissing", "Component", "ControlPlane", "ControlPlaneError", "Kubectl", "KubectlError"]
