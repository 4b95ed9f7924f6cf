#!/usr/bin/env bash
# The GPU check, one run on a lent GPU machine (no internet, no ../shared, Python 3.12 with torch):
#   (a) installs the carried wheels (.whl/) into /tmp/site and puts the project on PYTHONPATH;
#   (b) records the machine (nvidia-smi, torch, CUDA, the driver paths the runtime looks for);
#   (c) runs tests/runtime/test_cuda.py (pytest; JUnit XML and the text report);
#   (d) the serving benchmark for our runtime only (defaults and tuned, --quick), sampling the GPU's
#       utilisation and memory meanwhile, plus the model's own forward rate on the GPU.
# Everything goes to $OUT; the exit status is non-zero when a step failed. bench/device_prepare.sh makes
# the carried folders (.whl, .devcarry); the device run names both in `carry`. To rehearse here:
#     PATH=$PWD/.venv/bin:$PATH OUT=/tmp/devout bash bench/device_check.sh
# (the wheels are for Python 3.12 and are skipped under another Python; the CUDA tests then skip).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
SITE=/tmp/site
CARRY=$PWD/.devcarry
TEST_TIMEOUT=${TEST_TIMEOUT:-120}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-150}
start=$SECONDS
step() { echo "=== [$((SECONDS - start)) s] $*"; }

main() {
declare -A RC
step "(a) wheels and paths"
if [ ! -d "$CARRY" ]; then
  echo "no .devcarry here: run bench/device_prepare.sh and carry .devcarry"
  return 2
fi
if "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' && compgen -G ".whl/*.whl" >/dev/null; then
  rm -rf "$SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
  RC[install]=$?
else
  echo "wheels not installed: $("$PY" -V) is not Python 3.12 or .whl is empty (a rehearsal); its own packages serve"
  RC[install]=0
fi
export PYTHONPATH=$SITE:$PWD/runtime:$PWD/operator${PYTHONPATH:+:$PYTHONPATH}
export PATH=$SITE/bin:$CARRY/bin:$PATH
export LD_LIBRARY_PATH=$CARRY/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export TORCH_ISVC_SHARED_DIR=$CARRY/shared  # examples/mnist/data.py and bench/serving_bench.py read it
export TORCH_ISVC_MNIST_STORE=$CARRY/mnist-store  # tests/runtime/test_cuda.py's prebuilt seed store
"$PY" -c 'import isvc_runtime, captum, starlette, uvicorn, httptools, orjson, uvloop, prometheus_client
print("imports ok: isvc_runtime from", isvc_runtime.__file__)'
RC[imports]=$?
if [ "${RC[imports]}" != 0 ]; then
  echo "the runtime does not import: stopping"
  return 3
fi

step "(b) machine"
nvidia-smi -L 2>&1 || echo "no nvidia-smi"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
for p in /proc/driver/nvidia /dev/nvidiactl /dev/nvidia0; do
  if [ -e "$p" ]; then echo "$p: present"; else echo "$p: absent"; fi
done
echo "nproc $(nproc); wrk: $(command -v wrk) ($(wrk -v 2>&1 | head -1))"
"$PY" - <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available(), "devices", torch.cuda.device_count())
if torch.cuda.is_available():
    print("device 0:", torch.cuda.get_device_name(0), "cudnn", torch.backends.cudnn.version(),
          "cudnn.allow_tf32", torch.backends.cudnn.allow_tf32, "matmul.allow_tf32",
          torch.backends.cuda.matmul.allow_tf32)
from isvc_runtime.server import gpu_count
print("isvc_runtime.server.gpu_count():", gpu_count())
EOF

step "(c) CUDA tests"
timeout "$TEST_TIMEOUT" "$PY" -m pytest tests/runtime/test_cuda.py -v -rA -p no:cacheprovider \
  --junitxml="$OUT/cuda_tests.xml" >"$OUT/cuda_tests.txt" 2>&1
RC[tests]=$?
tail -n 25 "$OUT/cuda_tests.txt"

step "(c') the model's forward alone on the GPU (images/s)"
"$PY" - <<'EOF'
import sys, time, torch
sys.path.insert(0, "examples/mnist")
import data
from mnist import Net
if not torch.cuda.is_available():
    print("no CUDA: skipped")
    raise SystemExit(0)
net = Net().cuda().eval()
net.load_state_dict(torch.load("examples/mnist/mnist_cnn.pt", map_location="cuda", weights_only=True))
images, _ = data.heldout_split()
for batch in (1, 32, 256):
    x = data.to_tensor(images[:batch]).cuda()
    with torch.inference_mode():
        for _ in range(20):
            net(x)
        torch.cuda.synchronize()
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < 1.5:
            net(x).argmax(1).tolist()  # as the handler answers: synchronises every batch
            done += batch
    print(f"batch {batch}: {done / (time.perf_counter() - started):.0f} images/s")
EOF

step "(d) serving benchmark, our runtime only (GPU utilisation sampled to gpu_util.csv)"
sampler=""
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -lms 500 >"$OUT/gpu_util.csv" 2>&1 &
  sampler=$!
fi
timeout "$BENCH_TIMEOUT" "$PY" bench/serving_bench.py --only ours_default ours_tuned --no-results --quick \
  >"$OUT/bench_table.txt" 2>"$OUT/bench.log"
RC[bench]=$?
if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null; fi
cat "$OUT/bench_table.txt"
grep -E "cold start|c1:|c32:|explain" "$OUT/bench.log" | head -30

step "done"
status=0
summary="{\"seconds\": $((SECONDS - start))"
for key in install imports tests bench; do
  summary+=", \"${key}_rc\": ${RC[$key]}"
  [ "${RC[$key]}" = 0 ] || status=1
done
summary+="}"
echo "$summary" | tee "$OUT/summary.json"
return $status
}

main 2>&1 | tee "$OUT/device_check.log"
exit "${PIPESTATUS[0]}"
