# Thin targets; the logic lives in the scripts they call.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EXTRAS := runtime,operator,storage,dev

# Images: the one place their names live (deploy/ and the operator's ConfigMap defaults use the defaults).
DEFAULT_REGISTRY := torch-isvc
DEFAULT_VERSION := 0.1.0
REGISTRY ?= $(DEFAULT_REGISTRY)
VERSION ?= $(DEFAULT_VERSION)
DOCKER ?= docker
RUNTIME_IMAGE = $(REGISTRY)/runtime:$(VERSION)
RUNTIME_GPU_IMAGE = $(REGISTRY)/runtime:$(VERSION)-gpu
STORAGE_INITIALIZER_IMAGE = $(REGISTRY)/storage-initializer:$(VERSION)
OPERATOR_IMAGE = $(REGISTRY)/operator:$(VERSION)
IMAGES = $(RUNTIME_IMAGE) $(RUNTIME_GPU_IMAGE) $(STORAGE_INITIALIZER_IMAGE) $(OPERATOR_IMAGE)
DEPLOY_OUT ?= build/deploy

.PHONY: setup test lint cluster cluster-up model-store demo demo-check bench bench-peers clean prometheus clients-venv
.PHONY: node-setup node node-up images-local
.PHONY: images push-images image-names deploy-manifests

setup: $(VENV)/.installed

# uv (from PyPI, into the venv) installs the project: from its cache (~/.cache/uv) it hard-links the wheels'
# files instead of unpacking torch's GBs again, a fresh .venv in ~30 s instead of pip's ~3 min on 2 cores.
# --compile-bytecode writes the .pyc files pip would have (PYTHONDONTWRITEBYTECODE may forbid it later).
UV_VERSION := 0.13.9
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q 'uv==$(UV_VERSION)'
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -e '.[$(EXTRAS)]'
	touch $@

lint: setup
	$(VENV)/bin/ruff check .

cluster: setup
	bash e2e/cluster/build.sh

cluster-up: cluster
	$(PY) -m e2e.localkube

# The real node (e2e/node/): Debian's buildah, debootstrap, runc, CNI plugins, iptables and conntrack when
# missing; kubelet, kube-scheduler, kube-proxy and containerd built from pinned Go modules; the images built
# here with buildah (e2e/images/build.sh: rebuilt only when their sources change, cached outside the repo).
node-setup:
	bash e2e/node/setup.sh

node: cluster node-setup
	bash e2e/cluster/build.sh --node

images-local: node-setup
	REGISTRY=$(REGISTRY) VERSION=$(VERSION) bash e2e/images/build.sh

node-up: node images-local
	$(PY) -m e2e.node

model-store: setup
	$(PY) examples/mnist/build_model_store.py

# The seed walkthrough on one machine (e2e/demo.py; stand-ins in e2e/standin/): `demo` stays up until
# Ctrl-C, `demo-check` adds the canary step and exits 0 only when every output is as the seed says.
# PODS=auto (default): the pods on the real node (e2e/node/) when it can start (root, `make node` and
# `make images-local` done, CPUs for the pods' requests), else local processes; its first line says which.
# PODS=node or PODS=processes insists on one.
PODS ?= auto
demo: setup cluster
	$(PY) -m e2e.demo --pods $(PODS)

demo-check: setup cluster
	$(PY) -m e2e.demo --check --pods $(PODS)

# Debian's prometheus (with promtool) for tests/monitoring, installed only when missing; the package's
# own service is stopped if the install started one (the tests run their own on loopback).
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
	  || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; }; \
	  invoke-rc.d prometheus stop >/dev/null 2>&1 || true; }

# KServe's Python SDK and tritonclient, whose pins fight ours, in their own venv cached outside the repo
# (tests/kserve_compat/clients/); built once (minutes), then only its path is printed.
clients-venv:
	bash tests/kserve_compat/clients/venv.sh >/dev/null

# Two pytest-xdist workers: every e2e test on one of them, in order (they share one control plane and one
# node), the other tests by module on whichever is free (e2e/distribution.py). The e2e tests wait much of their
# time on probes, kubelets and controllers: in one process the suite kept 1.25 of the 2 cores busy on average
# (26.4 CPU-minutes in 21.2 minutes, measured 2026-11-30).
test: setup cluster node images-local prometheus clients-venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n 2 e2e tests

# Every bench in sequence (bench/suite.py): TorchServe vs our runtime (~10 min), explanations (~1 min),
# then the peers figures of bench-peers; the last lines are one JSON object per bench. BENCH_ARGS=--quick
# smoke-runs each (a round of a few seconds).
bench: setup
	$(PY) bench/suite.py serving explain throughput kserve grpc resnet $(BENCH_ARGS)

# The peers figures (issues 16 and 18), for a quiet machine, ~22 min on 2 cores: throughput vs TorchServe's
# best, KServe 0.21 on MNIST (default and best setting, memory), gRPC beside REST vs KServe, ResNet-18 vs
# TorchServe and KServe with the in-process ceiling and memory; each writes its section of bench/results.md.
bench-peers: setup
	$(PY) bench/suite.py $(BENCH_ARGS)

images:
	$(DOCKER) build --target runtime -t $(RUNTIME_IMAGE) .
	$(DOCKER) build --target runtime-gpu -t $(RUNTIME_GPU_IMAGE) .
	$(DOCKER) build --target storage-initializer -t $(STORAGE_INITIALIZER_IMAGE) .
	$(DOCKER) build --target operator -t $(OPERATOR_IMAGE) .

push-images:
	for image in $(IMAGES); do $(DOCKER) push "$$image" || exit 1; done

image-names:
	@printf '%s\n' $(IMAGES)

# deploy/ (and deploy/kserve/) with the chosen REGISTRY and VERSION, into $(DEPLOY_OUT) (and its kserve/):
# kubectl apply -f crds/ -f $(DEPLOY_OUT); KServe users: kubectl apply -f $(DEPLOY_OUT)/kserve
deploy-manifests:
	mkdir -p $(DEPLOY_OUT)/kserve
	for manifest in deploy/*.yaml deploy/kserve/*.yaml; do sed \
	  -e 's#"$(DEFAULT_REGISTRY)/runtime"#"$(REGISTRY)/runtime"#' \
	  -e 's#"defaultImageVersion": "$(DEFAULT_VERSION)"#"defaultImageVersion": "$(VERSION)"#' \
	  -e 's#"defaultGpuImageVersion": "$(DEFAULT_VERSION)-gpu"#"defaultGpuImageVersion": "$(VERSION)-gpu"#' \
	  -e 's#$(DEFAULT_REGISTRY)/runtime:$(DEFAULT_VERSION)#$(RUNTIME_IMAGE)#' \
	  -e 's#$(DEFAULT_REGISTRY)/storage-initializer:$(DEFAULT_VERSION)#$(STORAGE_INITIALIZER_IMAGE)#' \
	  -e 's#$(DEFAULT_REGISTRY)/operator:$(DEFAULT_VERSION)#$(OPERATOR_IMAGE)#' \
	  "$$manifest" > "$(DEPLOY_OUT)/$${manifest#deploy/}" || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
