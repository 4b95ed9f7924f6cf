#!/usr/bin/env bash
# The clients' virtual environment (requirements.txt beside this script), built once into a cache
# directory outside the repository keyed by the requirements' hash; a warm run only prints its path.
#
#   bash tests/kserve_compat/clients/venv.sh              # build if needed, print the venv directory
#   bash tests/kserve_compat/clients/venv.sh --print-dir  # print it, build nothing
#
# TORCH_ISVC_CACHE overrides the cache root (default: ${XDG_CACHE_HOME:-~/.cache}/torch-isvc);
# PYTHON the interpreter the venv is made from (default: python3).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REQUIREMENTS="$HERE/requirements.txt"
# Keyed by the requirement lines only: editing a comment does not rebuild.
HASH="$(grep -v -E '^[[:space:]]*(#|$)' "$REQUIREMENTS" | sha256sum | cut -c1-12)"
CACHE_ROOT="${TORCH_ISVC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/torch-isvc}"
VENV="$CACHE_ROOT/venv-clients-$HASH"

if [[ "${1:-}" == "--print-dir" || -f "$VENV/.complete" ]]; then
    echo "$VENV"
    exit 0
fi

mkdir -p "$CACHE_ROOT"
# One builder at a time (make test and a test session may both ask); the others wait, then reuse.
exec 9>"$VENV.lock"
flock 9
if [[ -f "$VENV/.complete" ]]; then
    echo "$VENV"
    exit 0
fi

# Built in place (a venv's scripts name its path); .complete marks a finished build, so an
# interrupted one is started over.
rm -rf "$VENV"
"${PYTHON:-python3}" -m venv "$VENV" >&2
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQUIREMENTS" >&2
touch "$VENV/.complete"
echo "$VENV"
