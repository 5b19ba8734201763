#!/usr/bin/env python
"""
Install Detectron2 v0.6 into the running interpreter's environment, from the package registry.

Detectron2's authors publish no wheel on PyPI. The registry's ``pb1-detectron2==0.6`` sdist is
Detectron2 v0.6's Python code (byte-identical to the official tag, checked by its sha256 below)
without ``detectron2/layers/csrc``, so its own setup.py cannot build. This script:

1. leaves any Detectron2 alone whose compiled ``detectron2._C`` imports (a source build with
   CUDA/C++ ops), and any Detectron2 this script already installed;
2. otherwise downloads the sdist with pip (the user's index settings apply, the hash is pinned),
   applies ``tools/patches/detectron2-v0.6-no-extension.patch`` (no C++ extension, lazy ``_C``
   for the few ops that need it -- rotated boxes, deformable convolution, ``COCOeval_opt``; d2_nucleus
   evaluates with faster-coco-eval itself -- and fixes for Pillow>=10, setuptools>=82,
   numpy>=1.24 and Python 3.11), and installs it with ``pip install --no-deps
   --no-build-isolation`` as version ``0.6+d2nucleus`` (v0.6's setup.py appends
   ``$D2_VERSION_SUFFIX``; ``pip show pb1-detectron2`` tells the patched build from others);
3. checks the result in a fresh interpreter.

Usage: ``python tools/install_detectron2.py [--force]``. Exits non-zero with a message on failure.

``--wheel-dir DIR`` does steps 2's download and patch, then builds a wheel
(``pb1_detectron2-0.6+d2nucleus-py3-none-any.whl``: pure Python, no extension) into ``DIR`` instead
of installing it, for a machine that cannot download (``bench/gpu_wheels.sh`` carries it to a GPU
machine). The environment running this script is not changed.
"""
import argparse
import os
import subprocess
import sys
import tarfile
import tempfile

SDIST = "pb1-detectron2==0.6"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
PATCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "patches",
                     "detectron2-v0.6-no-extension.patch")
# Written into the installed package by the patch: tells our own install from any other.
MARKER_MODULE = "detectron2.utils.missing_extension"
# PEP 440 local version label of the patched build: pip reports "0.6+d2nucleus".
VERSION_SUFFIX = "+d2nucleus"

PROBE = r"""
import importlib, sys
try:
    import detectron2
except Exception as e:
    print("absent", repr(e)); sys.exit(0)
try:
    import detectron2._C
    print("compiled", detectron2.__file__); sys.exit(0)
except Exception:
    pass
try:
    importlib.import_module("%s")
    print("ours", detectron2.__version__)
except Exception:
    print("other", detectron2.__file__)
""" % MARKER_MODULE

CHECK = r"""
import detectron2.layers, detectron2.evaluation
from detectron2.engine import DefaultTrainer, DefaultPredictor
from detectron2.model_zoo import get_config_file
from detectron2.projects import point_rend
assert get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")
print("detectron2", detectron2.__version__, "OK")
"""


def fail(msg):
    print(f"install_detectron2: ERROR: {msg}", file=sys.stderr)
    sys.exit(1)


def run(cmd, **kw):
    print("+", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, **kw)
    if r.returncode != 0:
        fail(f"command failed with exit code {r.returncode}: {' '.join(cmd)}")
    return r


def probe():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    return (out.stdout.strip().split() or ["absent"])[0]


def install(wheel_dir=None):
    """Download, patch and ``pip install`` the sdist; with ``wheel_dir``, build a wheel there instead."""
    try:
        import torch  # noqa: F401  (the sdist's setup.py imports torch)
    except ImportError:
        fail("torch must be installed first: pip install torch==2.14.1 torchvision==0.29.1")
    with tempfile.TemporaryDirectory(prefix="d2_nucleus-detectron2-") as tmp:
        req = os.path.join(tmp, "requirements.txt")
        with open(req, "w") as f:
            f.write(f"{SDIST} --hash=sha256:{SDIST_SHA256}\n")
        # --no-build-isolation/--no-deps: pip only fetches the file; nothing is built here.
        run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "--no-build-isolation", "--require-hashes", "-r", req, "-d", tmp, "-q"])
        archives = [f for f in os.listdir(tmp) if f.endswith(".tar.gz")]
        if len(archives) != 1:
            fail(f"expected one downloaded sdist in {tmp}, found {archives}")
        with tarfile.open(os.path.join(tmp, archives[0])) as tar:
            tar.extractall(tmp, filter="data")
        src = os.path.join(tmp, "pb1-detectron2-0.6")
        if not os.path.isdir(src):
            fail(f"unexpected sdist layout: {os.listdir(tmp)}")
        # Apply our patch; GIT_CEILING_DIRECTORIES keeps git from treating an enclosing
        # repository as the target.
        env = dict(os.environ, GIT_CEILING_DIRECTORIES=tmp)
        run(["git", "apply", "--verbose", "-p1", PATCH], cwd=src, env=env)
        env = dict(os.environ, D2_VERSION_SUFFIX=VERSION_SUFFIX)
        if wheel_dir:
            os.makedirs(wheel_dir, exist_ok=True)
            run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
                 "-q", "-w", wheel_dir, src], env=env)
        else:
            run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                 "--no-cache-dir", "-q", src], env=env)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true",
                        help="reinstall even if a patched Detectron2 is present "
                             "(a compiled source build is never replaced)")
    parser.add_argument("--wheel-dir", default=None, metavar="DIR",
                        help="build the patched Detectron2 as a pure-Python wheel into DIR instead of "
                             "installing it (for machines without network access)")
    args = parser.parse_args()

    if args.wheel_dir:
        install(wheel_dir=args.wheel_dir)
        wheels = [f for f in os.listdir(args.wheel_dir) if f.startswith("pb1_detectron2-") and f.endswith(".whl")]
        if not wheels:
            fail(f"no Detectron2 wheel was written to {args.wheel_dir}")
        print("install_detectron2: wrote", ", ".join(os.path.join(args.wheel_dir, w) for w in sorted(wheels)))
        return
    state = probe()
    if state == "compiled":
        print("install_detectron2: a Detectron2 with its compiled _C is installed; leaving it alone.")
        return
    if state == "ours" and not args.force:
        print("install_detectron2: Detectron2 v0.6 (installed by this script) is present.")
        return
    if state == "other":
        print("install_detectron2: found a Detectron2 without _C that this script did not install; "
              "replacing it with the patched v0.6.")
    install()
    r = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    if r.returncode != 0:
        fail("installed Detectron2 does not import:\n" + r.stderr[-3000:])
    print("install_detectron2:", r.stdout.strip())


if __name__ == "__main__":
    main()
