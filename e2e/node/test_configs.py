"""The node's configuration files, read back as the programs that consume them read them."""

from __future__ import annotations

import json
import tomllib
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from e2e import netns
from e2e.node import configs

LAYOUT = configs.NodeLayout(
    name="tisvc-node-abc123",
    workdir=Path("/tmp/torch-isvc-node-x"),
    containerd_root=Path("/cache/containerd"),
    address=IPv4Address("198.18.0.2"),
    pod_cidr=IPv4Network("198.19.0.0/24"),
    service_cidr=IPv4Network("198.19.128.0/24"),
    cgroup_root="/torch-isvc-node-abc123",
    pause_image="docker.io/torch-isvc/pause:0.1.0",
)


def test_containerd_restricts_oom_score_adj_because_this_machine_lacks_cap_sys_resource() -> None:
    config = tomllib.loads(configs.containerd_config(LAYOUT))
    assert config["version"] == 3
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False


def test_containerd_keeps_its_state_sockets_and_pod_netns_in_the_node_workdir() -> None:
    config = tomllib.loads(configs.containerd_config(LAYOUT))
    assert config["root"] == "/cache/containerd"
    for path in (config["state"], config["grpc"]["address"], config["ttrpc"]["address"]):
        assert Path(path).is_relative_to(LAYOUT.workdir)
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["netns_mounts_under_state_dir"] is True
    assert runtime["cni"]["conf_dir"] == str(LAYOUT.cni_conf_dir)  # never the host's /etc/cni/net.d


def test_containerd_uses_our_pause_image_and_keeps_no_layer_copies() -> None:
    images = tomllib.loads(configs.containerd_config(LAYOUT))["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == LAYOUT.pause_image
    assert images["discard_unpacked_layers"] is True


def test_pod_and_service_ranges_are_in_the_cluster_range() -> None:
    assert LAYOUT.pod_cidr.subnet_of(netns.CLUSTER_RANGE)
    assert LAYOUT.service_cidr.subnet_of(netns.CLUSTER_RANGE)
    bridge = json.loads(configs.cni_config(LAYOUT))["plugins"][0]
    assert bridge["ipam"]["ranges"] == [[{"subnet": "198.19.0.0/24"}]]
    assert Path(bridge["ipam"]["dataDir"]).is_relative_to(LAYOUT.workdir)


def test_kubelet_accepts_cgroup_v1_with_cgroupfs_under_the_nodes_own_cgroup_root() -> None:
    config = json.loads(configs.kubelet_config(LAYOUT, client_ca_file=Path("/ca.crt")))
    assert config["failCgroupV1"] is False  # 1.37's default refuses this machine's hybrid cgroups
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["cgroupRoot"] == LAYOUT.cgroup_root
    assert config["failSwapOn"] is False
    assert config["containerRuntimeEndpoint"] == f"unix://{LAYOUT.containerd_socket}"
    assert Path(config["podLogsDir"]).is_relative_to(LAYOUT.workdir)


def test_kube_proxy_leaves_the_hosts_conntrack_settings_alone() -> None:
    config = json.loads(configs.kube_proxy_config(LAYOUT, kubeconfig=Path("/k")))
    assert config["mode"] == "iptables"
    assert config["conntrack"]["maxPerCore"] == 0
    assert all(v == "0s" for k, v in config["conntrack"].items() if k.endswith("Timeout"))


def test_toml_writer_quotes_dotted_plugin_names() -> None:
    text = configs.to_toml({"plugins": {"io.containerd.x": {"a_b": True, "list": ["x"]}}})
    assert tomllib.loads(text) == {"plugins": {"io.containerd.x": {"a_b": True, "list": ["x"]}}}
