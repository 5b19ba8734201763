#!/usr/bin/env bash
# The CUDA check of d2_nucleus (bench/gpu_check.py: every CUDA path once, figures into one JSON).
#
#   bash bench/gpu_check.sh                       # on a bare GPU machine: installs .whl/, about 6-8 min
#   bash bench/gpu_check.sh --device cpu          # the dry run of every step on a CPU: installs nothing
#   bash bench/gpu_check.sh --steps env,train_r18 # any gpu_check.py flags are passed on
#
# On the GPU machine (python3 with torch and torchvision, nothing downloadable) the wheels that
# bench/gpu_wheels.sh put into .whl/ are installed into /tmp/site (pip --no-index --no-deps
# --target) and put on PYTHONPATH with the repository root. Results go to $OUT (default
# ./gpu_check_out): gpu_check.json (all figures), gpu_check.log (every command's output),
# gpu_util.csv (nvidia-smi samples) and install.log. Exit status: 0 when every step and check
# passed, 1 otherwise (the JSON says which), 2 when the wheels do not install.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_check_out}
export OUT
mkdir -p "$OUT"
PY=${PYTHON:-python3}
SITE=${GPU_CHECK_SITE:-/tmp/site}

dry=0
prev=
for a in "$@"; do
  if [ "$prev" = --device ] && [ "$a" = cpu ]; then dry=1; fi
  case "$a" in --device=cpu) dry=1 ;; esac
  prev=$a
done

if [ "$dry" = 0 ] && [ -d .whl ]; then
  echo "gpu_check.sh: installing $(ls .whl/*.whl | wc -l) wheels from .whl into $SITE"
  if ! "$PY" -m pip install --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
       .whl/*.whl >"$OUT/install.log" 2>&1; then
    tail -5 "$OUT/install.log" >&2
    echo "gpu_check.sh: the wheels did not install (see $OUT/install.log)" >&2
    exit 2
  fi
  export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
  "$PY" -m pip list 2>/dev/null >>"$OUT/install.log"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
exec "$PY" bench/gpu_check.py --out "$OUT" "$@"
