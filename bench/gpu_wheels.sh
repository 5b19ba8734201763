#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with the wheels that bench/gpu_check.sh installs on a GPU machine that can
# download nothing: CPython 3.12, manylinux x86-64, torch and torchvision already there.
#
#   bash bench/gpu_wheels.sh [DEST] [--overwrite]        # DEST defaults to .whl in the repository root
#
# Carried: what Detectron2 v0.6 and d2_nucleus import at run time and the GPU image lacks (its package
# list: /work/.library/device/KINDS.md). Pure-Python packages published only as sdists (fvcore,
# antlr4-python3-runtime) are built into wheels here; Detectron2 is built by
# tools/install_detectron2.py --wheel-dir (the sdist with our patch, no extension). Versions are those
# of requirements.txt where it pins them. Left out, with why:
#   imagecodecs (26 MB): only for reading JPEG-compressed TIFFs with tifffile; the check writes its
#     synthetic slides with zlib, and OpenSlide decodes JPEG slides itself;
#   imantics, xmljson: only the seed-compatible polygon mode and Aperio XML import, not run there;
#   torch, torchvision, numpy, scipy, scikit-image, pyarrow, tifffile, opencv, Pillow, matplotlib,
#     lxml, PyYAML, tabulate, tqdm, portalocker, cloudpickle, tensorboard, psutil, pytest, ...: on
#     the image already (its versions are used; the check records them).
# The folder must stay well under the device tool's 64 MiB (working tree included): checked below.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST="$ROOT/.whl"
OVERWRITE=0
for a in "$@"; do
  case "$a" in
    --overwrite) OVERWRITE=1 ;;
    -h|--help) sed -n 2,18p "$0"; exit 0 ;;
    -*) echo "gpu_wheels: unknown flag $a" >&2; exit 2 ;;
    *) DEST=$(realpath -m "$a") ;;
  esac
done
# an interpreter with torch (setup.py of the Detectron2 sdist imports it): PYTHON, else .venv/bin/python
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=python3
LIMIT_MIB=${GPU_WHEELS_LIMIT_MIB:-54}   # 64 MiB per call, ~10 MiB left for the working tree

if [ -e "$DEST" ] && [ "$OVERWRITE" != 1 ]; then
  echo "gpu_wheels: $DEST exists; pass --overwrite to rebuild it" >&2
  exit 2
fi

# name==version as requirements.txt pins it (one owner of the versions)
pin() {
  local line
  line=$(grep -i -E "^$1==" "$ROOT/requirements.txt" | head -1 | sed 's/[[:space:]]*#.*//')
  [ -n "$line" ] || { echo "gpu_wheels: $1 is not pinned in requirements.txt" >&2; exit 1; }
  echo "$line"
}

# compiled for CPython 3.12 (or abi3) on manylinux x86-64
BINARY=(
  "$(pin pycocotools)" "$(pin faster-coco-eval)" "$(pin zlib-ng)"
  "$(pin openslide-python)" "$(pin openslide-bin)"
  tornado==6.6.1                                     # distributed's event loop
)
# pure Python, published as wheels
PURE=(
  "$(pin yacs)" "$(pin termcolor)" "$(pin iopath)" "$(pin omegaconf)" "$(pin hydra-core)"
  "$(pin dask)" "$(pin distributed)"
  partd==1.4.2 locket==1.0.0 tblib==3.2.2 zict==3.0.0  # dask / distributed needs the image lacks
)
# pure Python, sdists only: built into py3-none-any wheels here
SDIST=("$(pin fvcore)" antlr4-python3-runtime==4.9.3)

TMP="$DEST.partial"
rm -rf "$TMP"
mkdir -p "$TMP"
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux_2_5_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
echo "gpu_wheels: downloading ${#BINARY[@]} compiled and ${#PURE[@]} pure-Python wheels for CPython 3.12"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$TMP" "${BINARY[@]}" "${PURE[@]}"
echo "gpu_wheels: building wheels of ${SDIST[*]}"
"$PY" -m pip wheel -q --no-deps -w "$TMP" "${SDIST[@]}"
echo "gpu_wheels: building the patched Detectron2 wheel"
"$PY" "$ROOT/tools/install_detectron2.py" --wheel-dir "$TMP"

# one wheel per distribution (two versions of one name stop pip's whole install), all pure or cp312/abi3
"$PY" - "$TMP" <<'EOF'
import collections, os, sys
names = collections.Counter()
for f in sorted(os.listdir(sys.argv[1])):
    parts = f[:-4].split("-") if f.endswith(".whl") else []
    if len(parts) < 5:
        sys.exit(f"gpu_wheels: not a wheel: {f}")
    py, abi, plat = parts[-3:]
    names[parts[0].lower().replace("_", "-")] += 1
    pure = abi == "none" and plat == "any"
    linux = "manylinux" in plat and "x86_64" in plat and abi in ("cp312", "abi3", "none")
    if not (pure or linux):
        sys.exit(f"gpu_wheels: {f} does not install on CPython 3.12, manylinux x86-64")
dup = sorted(n for n, c in names.items() if c > 1)
if dup:
    sys.exit(f"gpu_wheels: several versions of {dup}")
print(f"gpu_wheels: {len(names)} wheels: {', '.join(sorted(names))}")
EOF

rm -rf "$DEST"
mv "$TMP" "$DEST"
wheels_b=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
# what else travels: tracked and untracked-not-ignored files of the working tree
tree_b=$(cd "$ROOT" && git ls-files -z -co --exclude-standard | xargs -0 -r du -cb 2>/dev/null | awk '/total$/ {s += $1} END {print s + 0}')
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
echo "gpu_wheels: $DEST holds $(ls "$DEST" | wc -l) wheels, $(mib "$wheels_b") MiB; the working tree $(mib "$tree_b") MiB;" \
     "together $(mib $((wheels_b + tree_b))) MiB of the 64 MiB a call may carry"
if [ "$wheels_b" -gt $((LIMIT_MIB * 1048576)) ]; then
  echo "gpu_wheels: the wheels exceed ${LIMIT_MIB} MiB" >&2
  exit 1
fi
if [ $((wheels_b + tree_b)) -gt $((64 * 1048576)) ]; then
  echo "gpu_wheels: wheels and working tree exceed 64 MiB" >&2
  exit 1
fi
