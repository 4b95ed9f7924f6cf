# torch-isvc images: one Dockerfile, four targets (`make images` builds them with the Makefile's names).
#
#   docker build --target runtime             -t torch-isvc/runtime:0.1.0             .   CPU torch
#   docker build --target runtime-gpu         -t torch-isvc/runtime:0.1.0-gpu         .   CUDA torch
#   docker build --target storage-initializer -t torch-isvc/storage-initializer:0.1.0 .   no torch
#   docker build --target operator            -t torch-isvc/operator:0.1.0            .   no torch
#
# Every target installs the project with `pip install "./[EXTRAS]"` (the Makefile's `.[EXTRAS]`; the `./`
# tells linters it is a local path): pyproject.toml's extras are the one list of dependencies. The runtimes first install torch from the index a build arg names
# (TORCH_INDEX_URL for `runtime`, TORCH_GPU_INDEX_URL for `runtime-gpu`); pip then finds it satisfied.
# All images run as the same fixed non-root user, 65532 (deploy/ sets runAsUser 65532 too).

ARG PYTHON_IMAGE=python:3.11-slim

# The build context filtered by .dockerignore: only what `pip install .` needs (templates/ included).
FROM scratch AS source
COPY pyproject.toml README.md /src/
COPY operator/ /src/operator/
COPY runtime/ /src/runtime/
COPY templates/ /src/templates/

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN groupadd --gid 65532 isvc \
    && useradd --uid 65532 --gid 65532 --create-home --home-dir /home/isvc --shell /usr/sbin/nologin isvc
WORKDIR /src

# ---- runtime (CPU): python -m isvc_runtime --model-store /mnt/models ...
FROM base AS runtime
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.15.0
ARG TORCHVISION_VERSION=0.29.2
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
COPY --from=source /src /src
# torchserve: archives whose handlers import TorchServe's `ts` package run unmodified.
RUN pip install "./[runtime,torchserve]"
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
COPY --from=source /src /src
RUN pip install "./[runtime,torchserve]"
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 65532:65532
WORKDIR /home/isvc
EXPOSE 8080 8081 8082
ENTRYPOINT ["python", "-m", "isvc_runtime"]
CMD ["--model-store", "/mnt/models"]

# ---- storage-initializer: python -m isvc_runtime.storage SRC_URI DEST_DIR (no torch)
FROM base AS storage-initializer
COPY --from=source /src /src
RUN pip install "./[storage]"
USER 65532:65532
WORKDIR /home/isvc
ENTRYPOINT ["python", "-m", "isvc_runtime.storage"]

# ---- operator: python -m isvc_operator (kopf; no torch)
FROM base AS operator
COPY --from=source /src /src
# templates/ is installed as the package data of isvc_operator.templates (pyproject.toml).
RUN pip install "./[operator]"
USER 65532:65532
WORKDIR /home/isvc
# 8080: kopf's liveness endpoint (deploy/ sets ISVC_LIVENESS_ENDPOINT); 8081: the operator's Prometheus metrics.
EXPOSE 8080 8081
ENTRYPOINT ["python", "-m", "isvc_operator"]
