#!/usr/bin/env bash
# Builds the Dockerfile's images on this machine with Debian's buildah (no Docker daemon, no registry):
#
#   bash e2e/images/build.sh                 # pause, base, storage-initializer, runtime, operator (when changed)
#   bash e2e/images/build.sh TARGET...       # only these Dockerfile targets (and the base)
#   bash e2e/images/build.sh pause           # the node's pause image (e2e/cluster/pause, from scratch)
#   bash e2e/images/build.sh --export NAME   # NAME's image as a docker archive on stdout (for ctr import)
#   bash e2e/images/build.sh --print-image NAME / --print-id NAME   # its name / buildah's id ("" if none)
#   bash e2e/images/build.sh --print-source-hash TARGET   # the key its image is labelled with
#
# - The base image is made from Debian's packages (debootstrap: python3.11, pip, passwd for the Dockerfile's
#   groupadd/useradd) and passed as PYTHON_IMAGE; the Dockerfile's default stays the public python image.
# - torch comes from PyPI (TORCH_INDEX_URL): the CPU index is unreachable here; PyPI's wheel is the CUDA build.
# - torch, torchvision and their dependencies (~3 GB of wheels) are downloaded once, on the host, into a
#   wheelhouse under the cache; RUN steps see it read-only at /wheels through a pip.conf (find-links) mounted
#   at /etc/pip.conf, so pip installs them from there (pip ranks find-links files before the index's) and
#   neither the wheels nor any cache reach a layer. pip's own HTTP cache cannot serve here: the registry
#   proxy's responses carry no caching headers. The host's CA bundle is mounted read-only for pip (the
#   registries are reached through a proxy whose CA only the host trusts); it is never copied into an image.
# - Each image is squashed and labelled with the content hash of what IT is built from (source_key.py: its
#   Dockerfile stages, .dockerignore, the files those stages COPY, the base image, the build args): the
#   runtime image is keyed on runtime/isvc_runtime/ and pyproject.toml, the operator's on operator/ and
#   templates/, the storage initializer's on isvc_runtime's __init__.py and storage/; README.md on none.
#   An image whose label matches is not rebuilt, so the node does not re-import it either (it imports by
#   buildah's image id). Images live in buildah's store (overlay driver), outside the repository; sizes and
#   build times are appended to $CACHE_ROOT/images/builds.tsv.
#
# REGISTRY and VERSION name the images as the Makefile does (default torch-isvc/...:0.1.0), fully qualified
# with docker.io/ so that containerd and the kubelet see the names deploy/ and the operator use.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE_ROOT="${TORCH_ISVC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/torch-isvc}"
WORK="$CACHE_ROOT/images"
WHEELHOUSE="$CACHE_ROOT/wheels"
RECORD="$WORK/builds.tsv"
REGISTRY="${REGISTRY:-torch-isvc}"
VERSION="${VERSION:-0.1.0}"
TORCH_INDEX_URL="${LOCAL_TORCH_INDEX_URL:-https://pypi.org/simple}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
BASE_IMAGE=localhost/torch-isvc/python-base:3.11-bookworm
BASE_PACKAGES=python3,python3-venv,python3-pip,passwd,ca-certificates
HASH_LABEL=io.torch-isvc.source-hash
DEFAULT_TARGETS=(pause storage-initializer runtime operator)
# The Dockerfile's pins (its ARG defaults), read from it: one source of truth.
dockerfile_arg() { awk -F= -v name="$1" '$1 == "ARG " name {print $2; exit}' "$REPO/Dockerfile"; }
TORCH_VERSION="$(dockerfile_arg TORCH_VERSION)"
TORCHVISION_VERSION="$(dockerfile_arg TORCHVISION_VERSION)"

# buildah re-executes itself from a sealed memfd copy of its own binary (containers/storage pkg/unshare/unshare.c,
# copy_self_proc_exe); the kernel now and then refuses that seal with EBUSY while pages of the fresh copy are still
# referenced, and buildah exits before doing anything. Only that failure is retried (stderr shown once it ends).
TRANSIENT_REEXEC_FAILURE="sealing memfd copy: Device or resource busy"
buildah() {
    local errors rc=0 try
    errors="$(mktemp)"
    for try in 1 2 3; do
        rc=0
        command buildah --storage-driver overlay "$@" 2>"$errors" || rc=$?
        grep -qF "$TRANSIENT_REEXEC_FAILURE" "$errors" || break
        echo "images: buildah $1 failed to re-execute itself (transient, try $try of 3)" >&2
    done
    cat "$errors" >&2
    rm -f "$errors"
    return "$rc"
}

image_of() {  # image_of <target>: the image's fully qualified name
    case "$1" in
        runtime) echo "docker.io/$REGISTRY/runtime:$VERSION" ;;
        runtime-gpu) echo "docker.io/$REGISTRY/runtime:$VERSION-gpu" ;;
        storage-initializer | operator) echo "docker.io/$REGISTRY/$1:$VERSION" ;;
        pause) echo "docker.io/$REGISTRY/pause:$VERSION" ;;
        *) echo "images: unknown target $1" >&2; return 2 ;;
    esac
}

label_of() {  # label_of <image>: its source-hash label, empty when the image is missing
    buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"$HASH_LABEL\"}}" "$1" 2>/dev/null || true
}

size_of() { buildah images --noheading --format '{{.Size}}' "$1" | head -n1; }

source_hash() {  # source_hash <target>: the key of its image (e2e/images/source_key.py)
    local base_id
    base_id="$(buildah images --noheading --no-trunc --format '{{.ID}}' "$BASE_IMAGE" 2>/dev/null | head -n1)"
    python3 "$REPO/e2e/images/source_key.py" "$REPO" "$1" \
        "base $base_id build-args PYTHON_IMAGE=$BASE_IMAGE TORCH_INDEX_URL=$TORCH_INDEX_URL"
}

record() {  # record <image> <seconds>
    mkdir -p "$WORK"
    printf '%s\t%s\t%s\t%s s\n' "$(date -u +%FT%TZ)" "$1" "$(size_of "$1")" "$2" >>"$RECORD"
    echo "images: $1 built in $2 s, $(size_of "$1")" >&2
}

build_base() {
    [[ -n "$(buildah images --noheading --format '{{.ID}}' "$BASE_IMAGE" 2>/dev/null)" ]] && return 0
    local start=$SECONDS rootfs="$WORK/base-rootfs" container mountpoint
    echo "images: making $BASE_IMAGE from Debian's packages ($DEBIAN_MIRROR)" >&2
    rm -rf "$rootfs"
    mkdir -p "$rootfs"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$rootfs" "$DEBIAN_MIRROR" >&2
    # Debian marks its python as externally managed; an image's python is the image's own.
    rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED
    ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
    ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/pip"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
    : >"$rootfs/etc/resolv.conf"
    container="$(buildah from scratch)"
    mountpoint="$(buildah mount "$container")"
    cp -a "$rootfs/." "$mountpoint/"
    buildah umount "$container" >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd python3 "$container"
    buildah commit --squash --quiet "$container" "$BASE_IMAGE" >/dev/null
    buildah rm "$container" >/dev/null
    rm -rf "$rootfs"
    record "$BASE_IMAGE" $((SECONDS - start))
}

build_pause() {  # a static binary of our own, alone in an image from scratch
    local image hash start=$SECONDS container
    image="$(image_of pause)"
    hash="$(cd "$REPO" && cat e2e/cluster/pause/go.mod e2e/cluster/pause/main.go e2e/images/build.sh | sha256sum | cut -c1-16)"
    [[ "$(label_of "$image")" == "$hash" ]] && return 0
    (cd "$REPO/e2e/cluster/pause" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$WORK/pause" .)
    container="$(buildah from scratch)"
    buildah copy --quiet "$container" "$WORK/pause" /pause >/dev/null
    buildah config --entrypoint '["/pause"]' --user 65535:65535 --label "$HASH_LABEL=$hash" "$container"
    buildah commit --squash --quiet "$container" "$image" >/dev/null
    buildah rm "$container" >/dev/null
    rm -f "$WORK/pause"
    record "$image" $((SECONDS - start))
}

fill_wheelhouse() {  # torch and its dependencies, downloaded once per pinned version
    local stamp="$WHEELHOUSE/.complete-torch-$TORCH_VERSION-torchvision-$TORCHVISION_VERSION" start=$SECONDS
    local container
    [[ -f "$stamp" ]] && return 0
    echo "images: downloading torch $TORCH_VERSION and its dependencies into $WHEELHOUSE" >&2
    mkdir -p "$WHEELHOUSE"
    # pip of the base image itself chooses the wheels: the image's python and platform tags, not the host's.
    container="$(buildah from --pull=never "$BASE_IMAGE")"
    buildah run --isolation chroot --volume "$CA_BUNDLE:$CA_BUNDLE:ro" --volume "$WHEELHOUSE:/wheels" \
        "$container" -- pip download --quiet --disable-pip-version-check --no-cache-dir --dest /wheels \
        --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" ||
        { buildah rm "$container" >/dev/null; return 1; }
    buildah rm "$container" >/dev/null
    touch "$stamp"
    echo "images: wheelhouse filled in $((SECONDS - start)) s ($(du -sh "$WHEELHOUSE" | cut -f1))" >&2
}

build_target() {  # build_target <target> <hash>
    local target="$1" hash="$2" image start=$SECONDS
    image="$(image_of "$target")"
    [[ "$(label_of "$image")" == "$hash" ]] && return 0
    echo "images: building $image (target $target, source hash $hash)" >&2
    [[ "$target" == runtime* ]] && fill_wheelhouse
    mkdir -p "$WHEELHOUSE"
    printf '[global]\nfind-links = /wheels\n' >"$WORK/pip.conf"
    buildah bud --isolation chroot --layers=false --squash --pull=never --quiet \
        --file "$REPO/Dockerfile" --target "$target" --tag "$image" --label "$HASH_LABEL=$hash" \
        --build-arg "PYTHON_IMAGE=$BASE_IMAGE" --build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL" \
        --build-arg "TORCH_GPU_INDEX_URL=$TORCH_INDEX_URL" \
        --volume "$CA_BUNDLE:$CA_BUNDLE:ro" --volume "$WHEELHOUSE:/wheels:ro" \
        --volume "$WORK/pip.conf:/etc/pip.conf:ro" "$REPO" >/dev/null
    # A rebuilt image leaves its predecessor untagged: drop it (and only dangling images) from the store.
    buildah rmi --prune >/dev/null 2>&1 || true
    record "$image" $((SECONDS - start))
}

case "${1:-}" in
    --print-source-hash) source_hash "$2"; exit 0 ;;
    --print-image) image_of "$2"; exit 0 ;;
    --print-id)
        buildah images --noheading --no-trunc --format '{{.ID}}' "$(image_of "$2")" 2>/dev/null | head -n1
        exit 0
        ;;
    --export)
        image="$(image_of "$2")"
        exec buildah push --quiet "$image" "docker-archive:/dev/stdout:$image"
        ;;
esac

targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=("${DEFAULT_TARGETS[@]}")
mkdir -p "$WORK"
exec 9>"$WORK/.lock"
flock 9
[[ " ${targets[*]} " != " pause " ]] && build_base
for target in "${targets[@]}"; do
    if [[ "$target" == pause ]]; then build_pause; else build_target "$target" "$(source_hash "$target")"; fi
done
for target in "${targets[@]}"; do printf '%s\t%s\n' "$(image_of "$target")" "$(size_of "$(image_of "$target")")"; done
