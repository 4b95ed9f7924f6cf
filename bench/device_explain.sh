#!/usr/bin/env bash
# The paired explain benchmark (bench/explain_bench.py) on a lent GPU machine: Python 3.12 with torch, no
# internet, no Java, no ../shared. Carried (git-ignored, made here): .whl and .devcarry
# (bench/device_prepare.sh), .tsbundle (bench/ts_bundle.sh: a jlinked Java 17 runtime and TorchServe
# 0.12.0's `ts`, run by the device's python3). Steps:
#   (a) unpack the bundle to /tmp/tsb, install .whl into /tmp/site, set the paths as device_check.sh does;
#   (b) record the machine (nvidia-smi, torch, the bundle's java);
#   (c) run explain_bench.py (no install step: TORCH_ISVC_TS_BIN_DIR), while a watcher records which
#       processes hold GPU memory (gpu_apps.txt) and copies both servers' logs before the benchmark's
#       scratch folder goes; then says whether each server put its model on the GPU.
# Everything goes to $OUT (at most 8 files). To rehearse on a CPU machine (Python 3.11 there):
#     TORCH_ISVC_TS_PYTHON=$PWD/.venv/bin/python PYTHON=$PWD/.venv/bin/python OUT=/tmp/explain-out \
#       bash bench/device_explain.sh --rounds 2 --seconds 1
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device-explain}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=$(command -v "${PYTHON:-python3}")
SITE=/tmp/site
CARRY=$PWD/.devcarry
TSB=/tmp/tsb
BENCH_ARGS=("$@")
[ ${#BENCH_ARGS[@]} -gt 0 ] || BENCH_ARGS=(--rounds 6 --seconds 2 --concurrency 1 4)
start=$SECONDS
step() { echo "=== [$((SECONDS - start)) s] $*"; }

watch_gpu() {  # every 2 s: GPU processes with their command lines; the servers' logs while they exist
  while :; do
    if command -v nvidia-smi >/dev/null; then
      echo "--- $(date +%T) memory.used $(nvidia-smi --query-gpu=memory.used --format=csv,noheader 2>&1)"
      nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader 2>&1 | while IFS=, read -r pid mem; do
        echo "pid $pid $mem: $(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null | cut -c1-160)"
      done
    fi
    for pid in $(pgrep -f org.pytorch.serve.ModelServer); do
      echo "TorchServe frontend pid $pid runs $(readlink /proc/"$pid"/exe)"
    done
    for f in /tmp/isvc-explain-bench-*/ts_default/logs/ts_log.log \
      /tmp/isvc-explain-bench-*/ts_default/logs/model_log.log /tmp/isvc-explain-bench-*/ours_default/server.log; do
      [ -f "$f" ] && cp "$f" "$OUT/$(basename "$(dirname "$f")" | sed 's/logs/ts/')_$(basename "$f")" 2>/dev/null
    done
    sleep 2
  done
}

main() {
step "(a) bundle, wheels and paths"
for need in .devcarry .tsbundle/jre.tar.xz .tsbundle/ts.tar.xz; do
  [ -e "$need" ] || { echo "missing $need: run bench/device_prepare.sh and bench/ts_bundle.sh, carry it"; return 2; }
done
rm -rf "$TSB" && mkdir -p "$TSB"
tar -C "$TSB" -xJf .tsbundle/jre.tar.xz && tar -C "$TSB" -xJf .tsbundle/ts.tar.xz || return 2
if "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' && compgen -G ".whl/*.whl" >/dev/null; then
  rm -rf "$SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    || return 2
else
  echo "wheels not installed: $("$PY" -V) is not Python 3.12 (a rehearsal); its own packages serve"
fi
export PYTHONPATH=$SITE:$PWD/runtime:$PWD/operator${PYTHONPATH:+:$PYTHONPATH}
export PATH=$SITE/bin:$CARRY/bin:$PATH
export LD_LIBRARY_PATH=$CARRY/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export TORCH_ISVC_SHARED_DIR=$CARRY/shared
export JAVA_HOME=$TSB/jre                      # TorchServe runs $JAVA_HOME/bin/java
export TORCH_ISVC_TS_BIN_DIR=$TSB/ts/bin       # bench/serving_env.py: no install, this TorchServe
export TORCH_ISVC_TS_PYTHON=${TORCH_ISVC_TS_PYTHON:-$PY}  # TorchServe's frontend and its workers

step "(b) machine"
nvidia-smi -L 2>&1 || echo "no nvidia-smi"
echo "nproc $(nproc); wrk: $(command -v wrk); java: $("$JAVA_HOME/bin/java" -version 2>&1 | head -1)"
"$PY" -c 'import platform, torch; print("python", platform.python_version(), "torch", torch.__version__,
"cuda available", torch.cuda.is_available(), "devices", torch.cuda.device_count())'
"$TORCH_ISVC_TS_BIN_DIR/python" -c 'import ts, captum; print("ts from", ts.__file__, "captum", captum.__version__)' \
  || return 3

step "(c) explain_bench.py ${BENCH_ARGS[*]}"
watch_gpu >"$OUT/gpu_apps.txt" 2>&1 &
watcher=$!
"$PY" bench/explain_bench.py --no-results "${BENCH_ARGS[@]}"
rc=$?
kill "$watcher" 2>/dev/null
wait "$watcher" 2>/dev/null

step "where the models ran"
grep -m3 -hE "Number of GPUs|Number of CPUs|Java Home" "$OUT"/ts_ts_log.log 2>/dev/null
grep -m2 -hoE "Worker cmdline: .{0,400}" "$OUT"/ts_ts_log.log 2>/dev/null
grep -m1 -hoE "gpu_id[^,]*" "$OUT"/ts_ts_log.log 2>/dev/null
grep -h "^TorchServe frontend" "$OUT/gpu_apps.txt" | sort -u
grep -hcE "ClassNotFound|NoClassDefFound" "$OUT"/ts_ts_log.log | sed 's/^/missing-class errors in ts_log.log: /'
echo "GPU processes seen (pid, memory, command):"
grep "^pid" "$OUT/gpu_apps.txt" | sed -E 's/^pid ([0-9]+) +([0-9]+ MiB).*(ts.model_service_worker|isvc_runtime|org.pytorch.serve).*/\3 \1 \2/' | sort -u | head -10
grep -c "^pid" "$OUT/gpu_apps.txt" >/dev/null || echo "  none listed (nvidia-smi may not show processes here): see memory.used in gpu_apps.txt"
step "done (explain_bench rc $rc)"
echo "{\"seconds\": $((SECONDS - start)), \"explain_bench_rc\": $rc}" | tee "$OUT/summary.json"
return "$rc"
}

main 2>&1 | tee "$OUT/explain.log"
exit "${PIPESTATUS[0]}"
