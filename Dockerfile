# torch-isvc images: one Dockerfile, four targets (`make images` builds them with the Makefile's names).
#
#   docker build --target runtime             -t torch-isvc/runtime:0.1.0             .   CPU torch
#   docker build --target runtime-gpu         -t torch-isvc/runtime:0.1.0-gpu         .   CUDA torch
#   docker build --target storage-initializer -t torch-isvc/storage-initializer:0.1.0 .   no torch
#   docker build --target operator            -t torch-isvc/operator:0.1.0            .   no torch
#
# Each image holds only its own code, so that an edit elsewhere leaves it (and its build cache) alone:
#   runtime, runtime-gpu   runtime/isvc_runtime/
#   storage-initializer    runtime/isvc_runtime/__init__.py and runtime/isvc_runtime/storage/
#   operator               operator/isvc_operator/ with templates/ as its isvc_operator.templates package
# copied under /opt/torch-isvc (PYTHONPATH) and compiled there. Their dependencies are pyproject.toml's extras,
# the one list: the requirements stage writes requirements-EXTRA.txt for every extra, each target installs
# its own (after torch, whose layer thus outlives an edit of pyproject.toml).
# The runtimes first install torch from the index a build arg names (TORCH_INDEX_URL for `runtime`,
# TORCH_GPU_INDEX_URL for `runtime-gpu`); pip then finds it satisfied.
# All images run as the same fixed non-root user, 65532 (deploy/ sets runAsUser 65532 too).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/opt/torch-isvc \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN groupadd --gid 65532 isvc \
    && useradd --uid 65532 --gid 65532 --create-home --home-dir /home/isvc --shell /usr/sbin/nologin isvc
WORKDIR /src

# pyproject.toml's extras as requirements-EXTRA.txt files: what each target installs with pip.
FROM base AS requirements
COPY pyproject.toml /src/
RUN python -c 'import tomllib; from pathlib import Path; extras = tomllib.loads(Path("pyproject.toml").read_text())["project"]["optional-dependencies"]; [Path(f"requirements-{name}.txt").write_text("\n".join(requirements) + "\n") for name, requirements in extras.items()]'

# ---- runtime (CPU): python -m isvc_runtime --model-store /mnt/models ...
FROM base AS runtime
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.15.0
ARG TORCHVISION_VERSION=0.29.2
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
COPY --from=requirements /src/requirements-*.txt /src/
# torchserve: archives whose handlers import TorchServe's `ts` package run unmodified.
RUN pip install -r requirements-runtime.txt -r requirements-torchserve.txt
COPY runtime/isvc_runtime/ /opt/torch-isvc/isvc_runtime/
RUN python -m compileall -q /opt/torch-isvc
USER 65532:65532
WORKDIR /home/isvc
# 8080: KServe v1/v2 and /predictions; 8081: gRPC (Open Inference Protocol); 8082: Prometheus metrics.
EXPOSE 8080 8081 8082
ENTRYPOINT ["python", "-m", "isvc_runtime"]
CMD ["--model-store", "/mnt/models"]

# ---- runtime-gpu: the same, with CUDA torch (PyPI's Linux wheels are the CUDA build)
FROM base AS runtime-gpu
ARG TORCH_GPU_INDEX_URL=https://pypi.org/simple
ARG TORCH_VERSION=2.15.0
ARG TORCHVISION_VERSION=0.29.2
RUN pip install --index-url "${TORCH_GPU_INDEX_URL}" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
COPY --from=requirements /src/requirements-*.txt /src/
RUN pip install -r requirements-runtime.txt -r requirements-torchserve.txt
COPY runtime/isvc_runtime/ /opt/torch-isvc/isvc_runtime/
RUN python -m compileall -q /opt/torch-isvc
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 65532:65532
WORKDIR /home/isvc
EXPOSE 8080 8081 8082
ENTRYPOINT ["python", "-m", "isvc_runtime"]
CMD ["--model-store", "/mnt/models"]

# ---- storage-initializer: python -m isvc_runtime.storage SRC_URI DEST_DIR (no torch)
FROM base AS storage-initializer
COPY --from=requirements /src/requirements-*.txt /src/
RUN pip install -r requirements-storage.txt
COPY runtime/isvc_runtime/__init__.py /opt/torch-isvc/isvc_runtime/
COPY runtime/isvc_runtime/storage/ /opt/torch-isvc/isvc_runtime/storage/
RUN python -m compileall -q /opt/torch-isvc
USER 65532:65532
WORKDIR /home/isvc
ENTRYPOINT ["python", "-m", "isvc_runtime.storage"]

# ---- operator: python -m isvc_operator (kopf; no torch)
FROM base AS operator
COPY --from=requirements /src/requirements-*.txt /src/
RUN pip install -r requirements-operator.txt
COPY operator/isvc_operator/ /opt/torch-isvc/isvc_operator/
# templates/ is the package isvc_operator.templates (as pyproject.toml maps it): the operator's own files.
COPY templates/ /opt/torch-isvc/isvc_operator/templates/
RUN python -m compileall -q /opt/torch-isvc
USER 65532:65532
WORKDIR /home/isvc
# 8080: kopf's liveness endpoint (deploy/ sets ISVC_LIVENESS_ENDPOINT); 8081: the operator's Prometheus metrics.
EXPOSE 8080 8081
ENTRYPOINT ["python", "-m", "isvc_operator"]
