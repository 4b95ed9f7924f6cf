#!/usr/bin/env bash
# Prepare, on this machine, what bench/device_check.sh needs on a GPU machine that has no internet and
# no ../shared: wheels of the runtime's packages that machine lacks (.whl/) and a carried folder
# (.devcarry/: the MNIST data and seed request, the example's model store, wrk and its libluajit).
# Both folders are git-ignored; the device run names them in `carry`.
#
#     bash bench/device_prepare.sh            # from the repository root, with .venv set up (make setup)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SHARED=${TORCH_ISVC_SHARED_DIR:-../shared}

# Python 3.12 wheels of what the device image lacks (it has torch, torchvision, numpy, pillow, uvloop,
# prometheus-client, anyio, h11, click, httpx, pytest, matplotlib, tqdm, packaging, pyyaml).
# Versions: the ones the project venv runs here. torch-model-archiver builds the stores as CI does.
WHEELS=(captum==0.9.0 starlette==1.10.0 uvicorn==0.54.0 httptools==0.9.0 orjson==3.13.0
  torch-model-archiver==0.12.0 enum-compat==0.0.3)
rm -rf .whl && mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 --platform any -d .whl "${WHEELS[@]}"

rm -rf .devcarry && mkdir -p .devcarry/shared/data/requests/v1 .devcarry/bin .devcarry/lib
cp -r "$SHARED/data/mnist" .devcarry/shared/data/mnist
cp "$SHARED/data/requests/v1/mnist.json" .devcarry/shared/data/requests/v1/mnist.json
"$PY" examples/mnist/build_model_store.py .devcarry/mnist-store >/dev/null
WRK=$(command -v wrk)
cp "$WRK" .devcarry/bin/wrk
cp -L "$(ldd "$WRK" | awk '/libluajit/ {print $3}')" .devcarry/lib/libluajit-5.1.so.2
du -sh .whl .devcarry
