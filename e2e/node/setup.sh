#!/usr/bin/env bash
# Installs the Debian packages the real node and the local image builds need, only those missing:
#   buildah + debootstrap   images built here (no Docker daemon), the base image made from Debian's packages
#   runc                    the OCI runtime containerd's CRI plugin calls (crun refuses hybrid cgroups)
#   containernetworking-plugins   bridge, host-local, loopback, portmap for the node's pods
#   iptables, conntrack     kube-proxy's iptables mode and its conntrack cleanup
# `make node-setup` runs it; `make test` and `make images-local` depend on that target.
set -euo pipefail

declare -A COMMAND_OF=(
    [buildah]=buildah
    [debootstrap]=debootstrap
    [runc]=runc
    [iptables]=iptables
    [conntrack]=conntrack
    [containernetworking-plugins]=/usr/lib/cni/bridge
)

missing=()
for package in "${!COMMAND_OF[@]}"; do
    probe="${COMMAND_OF[$package]}"
    if [[ "$probe" == /* ]]; then [[ -x "$probe" ]] && continue; else command -v "$probe" >/dev/null && continue; fi
    missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "node setup: installing ${missing[*]}" >&2
install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; }
install || { apt-get update -q && install; }
