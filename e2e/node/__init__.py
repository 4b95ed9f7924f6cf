"""The real node: kubelet + containerd + runc (and kube-proxy, kube-scheduler) in a network namespace of its
own, beside a control plane in the same namespace, running the images that e2e/images/build.sh builds here.

- :mod:`e2e.node.configs`: the configuration files, pure functions (containerd, CNI, kubelet, kube-proxy);
- :mod:`e2e.node.host`: what a node changes on the host outside its directories, and putting it back;
- :mod:`e2e.node.components`: the node's processes and its image store;
- :mod:`e2e.node.node`: one node, started and stopped (``python -m e2e.node``, ``make node-up``);
- :mod:`e2e.node.workloads`: what the tests do on a running node (apply, wait, reach a Service, a GCS
  emulator in its namespace).
"""
