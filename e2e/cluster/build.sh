#!/usr/bin/env bash
# Builds the local control plane (kube-apiserver, kube-controller-manager, etcd) from the Go
# modules pinned in e2e/cluster/go.mod and e2e/cluster/etcd/go.mod, into a cache directory
# outside the repository keyed by the pinned versions, and Knative Serving's admission webhook
# (e2e/cluster/knative/go.mod) into a directory of its own; it also fetches the pinned Knative and
# Istio modules (e2e/cluster/istio/go.mod) whose CRDs and config the e2e tests read from the Go
# module cache. A warm run (all binaries and modules present) only prints the directory. With --node
# it also builds the real node's binaries: kube-scheduler, kubelet and kube-proxy from the same
# k8s.io/kubernetes (same directory), and containerd, its runc shim and ctr from
# e2e/cluster/containerd/go.mod (a directory of their own, keyed by containerd's version).
#
#   bash e2e/cluster/build.sh                        # build if needed, print the bin dir
#   bash e2e/cluster/build.sh --print-dir            # print the bin dir, build nothing
#   bash e2e/cluster/build.sh --node                 # control plane + node, print the bin dir
#   bash e2e/cluster/build.sh --print-containerd-dir # print containerd's bin dir, build nothing
#   bash e2e/cluster/build.sh --print-knative-dir    # print the Knative webhook's dir, build nothing
#
# TORCH_ISVC_CACHE overrides the cache root (default: ${XDG_CACHE_HOME:-~/.cache}/torch-isvc).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# The pinned versions are read from the go.mod files so there is a single source of truth.
mod_version() {  # mod_version <go.mod> <module path>
    awk -v m="$2" '$1 == m && $2 ~ /^v/ {print $2; exit}
                   $1 == "require" && $2 == m {print $3; exit}' "$1"
}
K8S_VERSION="$(mod_version "$HERE/go.mod" k8s.io/kubernetes)"
ETCD_VERSION="$(mod_version "$HERE/etcd/go.mod" go.etcd.io/etcd/server/v3)"
CONTAINERD_VERSION="$(mod_version "$HERE/containerd/go.mod" github.com/containerd/containerd/v2)"
KNATIVE_VERSION="$(mod_version "$HERE/knative/go.mod" knative.dev/serving)"
ISTIO_VERSION="$(mod_version "$HERE/istio/go.mod" istio.io/api)"
if [[ -z "$K8S_VERSION" || -z "$ETCD_VERSION" || -z "$CONTAINERD_VERSION" || -z "$KNATIVE_VERSION" \
      || -z "$ISTIO_VERSION" ]]; then
    echo "build.sh: cannot read pinned versions from $HERE/{,etcd/,containerd/,knative/,istio/}go.mod" >&2
    exit 1
fi

CACHE_ROOT="${TORCH_ISVC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/torch-isvc}"
BIN_DIR="$CACHE_ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
CONTAINERD_DIR="$CACHE_ROOT/containerd-$CONTAINERD_VERSION"
BINARIES=(kube-apiserver kube-controller-manager etcd)
NODE_BINARIES=(kube-scheduler kubelet kube-proxy)
CONTAINERD_BINARIES=(containerd containerd-shim-runc-v2 ctr)
KNATIVE_DIR="$CACHE_ROOT/knative-serving-$KNATIVE_VERSION"

case "${1:-}" in
    --print-dir) echo "$BIN_DIR"; exit 0 ;;
    --print-containerd-dir) echo "$CONTAINERD_DIR"; exit 0 ;;
    --print-knative-dir) echo "$KNATIVE_DIR"; exit 0 ;;
    --node) BINARIES+=("${NODE_BINARIES[@]}") ;;
    "") CONTAINERD_BINARIES=() ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
esac

modules_present() {  # the Knative and Istio sources the tests read (module cache paths are lower case here)
    local cache
    cache="$(go env GOMODCACHE 2>/dev/null)" || return 1
    [[ -d "$cache/knative.dev/serving@$KNATIVE_VERSION/config/core" && \
       -f "$cache/istio.io/api@$ISTIO_VERSION/kubernetes/customresourcedefinitions.gen.yaml" ]]
}

all_present() {
    local b
    for b in "${BINARIES[@]}"; do [[ -x "$BIN_DIR/$b" ]] || return 1; done
    for b in "${CONTAINERD_BINARIES[@]}"; do [[ -x "$CONTAINERD_DIR/$b" ]] || return 1; done
    [[ -x "$KNATIVE_DIR/webhook" ]] && modules_present
}

if all_present; then
    echo "$BIN_DIR"
    exit 0
fi

command -v go >/dev/null || { echo "build.sh: 'go' not found on PATH (need Go >= 1.26)" >&2; exit 1; }
mkdir -p "$BIN_DIR"

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -mod=readonly -trimpath"

build_k8s() {  # build_k8s <name>
    local name="$1" minor date ldflags
    minor="${K8S_VERSION#v*.}"; minor="${minor%%.*}"
    date="$(cd "$HERE" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)"
    ldflags="-s -w"
    local pkg key val
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        for key in gitVersion gitMajor gitMinor gitCommit gitTreeState buildDate; do
            case "$key" in
                gitVersion) val="$K8S_VERSION" ;;
                gitMajor) val="${K8S_VERSION:1:1}" ;;
                gitMinor) val="$minor" ;;
                gitCommit) val="" ;;  # the module proxy carries no commit hash
                gitTreeState) val="clean" ;;
                buildDate) val="$date" ;;
            esac
            ldflags+=" -X $pkg.$key=$val"
        done
    done
    (cd "$HERE" && go build -o "$BIN_DIR/.$name.tmp" -ldflags "$ldflags" "k8s.io/kubernetes/cmd/$name")
    mv -f "$BIN_DIR/.$name.tmp" "$BIN_DIR/$name"
}

build_etcd() {
    (cd "$HERE/etcd" && go build -o "$BIN_DIR/.etcd.tmp" \
        -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" go.etcd.io/etcd/server/v3)
    mv -f "$BIN_DIR/.etcd.tmp" "$BIN_DIR/etcd"
}

build_containerd() {  # build_containerd <name>: version ldflags as containerd's Makefile sets them
    local name="$1"
    (cd "$HERE/containerd" && go build -o "$CONTAINERD_DIR/.$name.tmp" \
        -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
        "github.com/containerd/containerd/v2/cmd/$name")
    mv -f "$CONTAINERD_DIR/.$name.tmp" "$CONTAINERD_DIR/$name"
}

# containerd first, under a lock of its own: it does not wait for a control-plane build elsewhere.
if [[ ${#CONTAINERD_BINARIES[@]} -gt 0 ]]; then
    mkdir -p "$CONTAINERD_DIR"
    exec 8>"$CONTAINERD_DIR/.lock"
    flock 8
    for b in "${CONTAINERD_BINARIES[@]}"; do
        [[ -x "$CONTAINERD_DIR/$b" ]] && continue
        echo "build.sh: building $b ($CONTAINERD_VERSION) into $CONTAINERD_DIR" >&2
        start=$SECONDS
        build_containerd "$b"
        echo "build.sh: $b built in $((SECONDS - start)) s" >&2
    done
    flock -u 8
fi

# One builder at a time (CI and a developer may both call this); the others wait, then reuse.
exec 9>"$BIN_DIR/.lock"
flock 9

# One binary at a time keeps peak memory bounded on small machines; the shared Go build cache
# makes the second Kubernetes binary much cheaper than the first.
for b in "${BINARIES[@]}"; do
    [[ -x "$BIN_DIR/$b" ]] && continue
    echo "build.sh: building $b ($([[ $b == etcd ]] && echo "$ETCD_VERSION" || echo "$K8S_VERSION")) into $BIN_DIR" >&2
    start=$SECONDS
    if [[ "$b" == etcd ]]; then build_etcd; else build_k8s "$b"; fi
    echo "build.sh: $b built in $((SECONDS - start)) s" >&2
done

# Knative's webhook: its own module (Knative v0.42 builds against Kubernetes v0.29 client modules).
mkdir -p "$KNATIVE_DIR"
exec 7>"$KNATIVE_DIR/.lock"
flock 7
if [[ ! -x "$KNATIVE_DIR/webhook" ]]; then
    echo "build.sh: building Knative Serving's webhook ($KNATIVE_VERSION) into $KNATIVE_DIR" >&2
    start=$SECONDS
    (cd "$HERE/knative" && go build -o "$KNATIVE_DIR/.webhook.tmp" -ldflags "-s -w" knative.dev/serving/cmd/webhook)
    mv -f "$KNATIVE_DIR/.webhook.tmp" "$KNATIVE_DIR/webhook"
    echo "build.sh: webhook built in $((SECONDS - start)) s" >&2
fi
(cd "$HERE/knative" && go mod download knative.dev/serving)
(cd "$HERE/istio" && go mod download istio.io/api)

echo "$BIN_DIR"
