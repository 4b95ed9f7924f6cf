#!/usr/bin/env bash
# `make test`'s pytest: tests/ (no cluster: runtime processes, fakes, local servers) and e2e/ (one control
# plane, one node) as two pytest processes side by side. Run in one process, the suite kept 1.25 of the 2 cores
# busy on average (26.4 CPU-minutes in 21.2 minutes, 2026-11-30): the e2e tests wait on probes, kubelets and
# controllers, and tests/ fills that time. They share nothing but the machine: tests/ starts no cluster.
#
#   bash tests/run_side_by_side.sh PYTHON [PYTEST ARGS...]
#
# e2e/ streams its output; tests/'s follows once both ended (in full when it failed, else its summary line).
# Exit status 0 only when both passed.
set -uo pipefail
python="${1:?usage: run_side_by_side.sh PYTHON [PYTEST ARGS...]}"
shift
log="$(mktemp -t torch-isvc-tests.XXXXXX)"
started=$SECONDS
# The cache of last failures stays e2e's: two processes writing it at once would race.
{
    "$python" -m pytest -p no:cacheprovider tests "$@" >"$log" 2>&1
    status=$?
    echo $((SECONDS - started)) >"$log.seconds"
    exit $status
} &
fast=$!
trap 'pkill -TERM -P "$fast" 2>/dev/null; kill "$fast" 2>/dev/null; wait "$fast" 2>/dev/null; rm -f "$log" "$log.seconds"' EXIT
trap 'exit 130' INT TERM

"$python" -m pytest e2e "$@"
e2e_status=$?
e2e_seconds=$((SECONDS - started))
wait "$fast"
fast_status=$?
fast_seconds="$(cat "$log.seconds" 2>/dev/null || echo '?')"

echo
echo "=== tests/ (ran beside e2e/) ==="
if [[ $fast_status -eq 0 ]]; then tail -n 1 "$log"; else cat "$log"; fi
verdict() { if [[ $1 -eq 0 ]]; then echo passed; else echo "FAILED (pytest exit $1)"; fi; }
echo "make test: e2e/ $(verdict $e2e_status) in ${e2e_seconds} s; tests/ $(verdict $fast_status) in ${fast_seconds} s"
[[ $e2e_status -eq 0 && $fast_status -eq 0 ]]
