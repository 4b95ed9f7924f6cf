#!/usr/bin/env bash
# Bundle TorchServe 0.12.0 for a machine with Python 3.12 and torch but no internet and no Java (the lent
# GPU machine; bench/device_explain.sh is the run there). Makes the git-ignored .tsbundle/:
#   jre.tar.xz   a minimal Java 17 runtime (jlink, from this machine's JDK) -> jre/
#   ts.tar.xz    -> ts/site/: TorchServe's pure-Python package `ts` (its frontend jar slimmed by
#                bench/ts_slim_jar.py) and torch-model-archiver's `model_archiver`;
#                -> ts/bin/: python, torchserve, torch-model-archiver, which run ${TORCH_ISVC_TS_PYTHON:-python3} with
#                ts/site first on PYTHONPATH. TorchServe's frontend starts its Python workers with the
#                interpreter that ran `torchserve` (it passes sys.executable as --python), so the
#                workers run that same python3, and inherit PYTHONPATH.
# Point the benchmarks at it with TORCH_ISVC_TS_BIN_DIR=<unpacked>/ts/bin (bench/serving_env.py) and
# JAVA_HOME=<unpacked>/jre.
# (bench/device_explain.sh, rehearsed on a CPU machine, serves explanations from it: the slimmed jar on
# the jlinked JRE; see its header).
#
#     bash bench/ts_bundle.sh      # from the repository root, with .venv and internet (pip download)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$PWD/.venv/bin/python
OUTDIR=.tsbundle
# What `jdeps --print-module-deps` reports for the slimmed jar's classes (java.compiler, java.desktop,
# java.management, java.naming, java.rmi, java.scripting, java.sql, jdk.sctp, jdk.unsupported), plus
# modules reached by reflection or service lookup: java.logging, java.xml (log4j), jdk.crypto.ec (TLS
# classes netty initialises), jdk.management (JMX platform beans).
MODULES=${TS_JRE_MODULES:-java.base,java.compiler,java.desktop,java.logging,java.management,java.naming,java.rmi,java.scripting,java.sql,java.xml,jdk.crypto.ec,jdk.management,jdk.sctp,jdk.unsupported}

rm -rf "$OUTDIR" && mkdir -p "$OUTDIR"
stage=$(mktemp -d /tmp/tsbundle-stage.XXXX)
trap 'rm -rf "$stage"' EXIT

# (a) the JRE
jlink --add-modules "$MODULES" --strip-debug --no-header-files --no-man-pages --compress=0 \
  --output "$stage/jre"
tar -C "$stage" -cJf "$OUTDIR/jre.tar.xz" jre

# (b) ts and model_archiver from their wheels (pure Python: any 3.x)
mkdir -p "$stage/wheels" "$stage/ts/site" "$stage/ts/bin"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform any -d "$stage/wheels" torchserve==0.12.0 torch-model-archiver==0.12.0
for w in "$stage"/wheels/*.whl; do (cd "$stage/ts/site" && "$PY" -m zipfile -e "$w" .); done
jar=$stage/ts/site/ts/frontend/model-server.jar
"$PY" bench/ts_slim_jar.py "$jar" "$jar.slim"
mv "$jar.slim" "$jar"
# wrappers: resolve the unpacked site/ beside bin/
for spec in "python:" "torchserve:-m ts.model_server" \
  "torch-model-archiver:-c 'import sys; from model_archiver.model_packaging import generate_model_archive; sys.exit(generate_model_archive())'"; do
  name=${spec%%:*}
  args=${spec#*:}
  cat >"$stage/ts/bin/$name" <<EOF
#!/usr/bin/env bash
# TorchServe 0.12.0 from the bundle (bench/ts_bundle.sh): site/ first on PYTHONPATH, \$TORCH_ISVC_TS_PYTHON or python3.
here=\$(cd "\$(dirname "\${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH=\$here/site\${PYTHONPATH:+:\$PYTHONPATH}
exec "\${TORCH_ISVC_TS_PYTHON:-python3}" $args "\$@"
EOF
  chmod +x "$stage/ts/bin/$name"
done
tar -C "$stage" -cJf "$OUTDIR/ts.tar.xz" ts
du -sh "$OUTDIR"/*.tar.xz
