# -*- coding: utf-8 -*-
"""
d2_nucleus's C++ CPU kernels (``d2_nucleus/modeling/cpu/csrc``), compiled on first use with
``torch.utils.cpp_extension`` (g++ and ninja) and cached, then registered as ``torch.ops.d2_nucleus``.

They are an optional speed-up: where they cannot be built (no compiler) :func:`native_ops` warns once
and returns ``None``, and the callers keep PyTorch's and torchvision's kernels. ``make install``
builds them once (``tools/build_native.py``), so a first prediction does not wait.

The build is cached under ``$D2_NUCLEUS_NATIVE_CACHE`` (default
``~/.cache/d2_nucleus/native``), in a folder named by a hash of the sources, the compiler flags, the
torch version and the CPU model: the kernels are compiled for the CPU they run on
(``-march=native``, or ``$D2_NUCLEUS_NATIVE_ARCH``), so a home folder shared by different machines
gets one build per CPU.
"""
import glob
import hashlib
import logging
import os
import platform
import re
import threading

import torch

__all__ = ["native_ops", "build_native_ops", "build_dir"]

logger = logging.getLogger(__name__)

CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")


def _march() -> str:
    """
    The CPU the kernels are compiled for: this one (``native``), or the ``-march`` value in
    ``$D2_NUCLEUS_NATIVE_ARCH`` (e.g. ``x86-64-v2``: SSE4.2, no AVX; ``x86-64-v3``: AVX2), for a
    build that must run on older CPUs than the one compiling it, and to check that the kernels
    need neither AVX-512 nor AVX2 (bench/bench_precision.py --kernels-arch).
    """
    arch = os.environ.get("D2_NUCLEUS_NATIVE_ARCH", "").strip() or "native"
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", arch):  # it goes onto a compiler command line
        logger.warning(f"D2_NUCLEUS_NATIVE_ARCH={arch!r} is not a -march value (e.g. x86-64-v2): using native")
        return "native"
    return arch


# -ffp-contract=off: no fused multiply-adds, so float32 results equal torchvision's CPU kernels
# (compiled without them) bit for bit. -fopenmp: at::parallel_for runs on one thread without it
# (it links libgomp.so.1, the OpenMP runtime torch already loaded). -mprefer-vector-width=512:
# AVX-512 where the CPU has it (measured ~10-20% faster than g++'s default 256-bit on 2 cores;
# ignored without AVX-512).
CFLAGS = ["-O3", f"-march={_march()}", "-mprefer-vector-width=512", "-ffp-contract=off", "-fopenmp"]

_lock = threading.Lock()
_state = {"tried": False, "ops": None}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _sources():
    return sorted(glob.glob(os.path.join(CSRC, "*.cpp")))


def build_dir() -> str:
    h = hashlib.sha256()
    for path in _sources() + sorted(glob.glob(os.path.join(CSRC, "*.h"))):
        with open(path, "rb") as f:
            h.update(f.read())
    h.update(" ".join(CFLAGS + [torch.__version__, _cpu_model()]).encode())
    root = os.environ.get("D2_NUCLEUS_NATIVE_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "d2_nucleus", "native"
    )
    return os.path.join(root, h.hexdigest()[:16])


def build_native_ops(verbose: bool = False):
    """Compile (or load the cached build of) the kernels; returns ``torch.ops.d2_nucleus``. Raises on failure."""
    # its import warns "No CUDA runtime is found" on CPU machines: these kernels are CPU-only
    cpp_logger = logging.getLogger("torch.utils.cpp_extension")
    level = cpp_logger.level
    cpp_logger.setLevel(logging.ERROR)
    try:
        from torch.utils.cpp_extension import load
    finally:
        cpp_logger.setLevel(level)

    out = build_dir()
    os.makedirs(out, exist_ok=True)
    load(
        name="d2_nucleus_native",
        sources=_sources(),
        extra_cflags=CFLAGS,
        extra_ldflags=["-fopenmp"],
        build_directory=out,
        is_python_module=False,
        verbose=verbose,
    )
    return torch.ops.d2_nucleus


def native_ops():
    """``torch.ops.d2_nucleus`` once built, or ``None`` (with one warning) where they cannot be."""
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            if os.environ.get("D2_NUCLEUS_NO_NATIVE"):
                logger.info("D2_NUCLEUS_NO_NATIVE is set: using PyTorch's kernels")
            else:
                try:
                    _state["ops"] = build_native_ops()
                except Exception as e:  # no compiler, no ninja, a failed build: fall back
                    msg = " ".join(str(e).split())[:300]
                    logger.warning(f"d2_nucleus's C++ kernels could not be built ({msg}); using PyTorch's")
        return _state["ops"]

