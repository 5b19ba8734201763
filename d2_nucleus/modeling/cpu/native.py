# -*- coding: utf-8 -*-
"""
d2_nucleus's C++ CPU kernels (``d2_nucleus/modeling/cpu/csrc``), compiled on first use with
``torch.utils.cpp_extension`` (g++ and ninja) and cached, then registered as ``torch.ops.d2_nucleus``.

They are an optional speed-up: where they cannot be built (no compiler) :func:`native_ops` warns once
and returns ``None``, and the callers keep PyTorch's and torchvision's kernels. ``make install``
builds them once (``tools/build_native.py``), so a first prediction does not wait.

The cache is ``$D2_NUCLEUS_NATIVE_CACHE`` (default ``~/.cache/d2_nucleus/native``), one folder per
build, named by a hash of everything the build depends on (:func:`build_inputs`): the sources'
contents, the compiler flags, torch (version, commit, install location, include paths, C++ ABI), the
Python interpreter (executable, version, include path), the compiler (path and ``--version``) and the
CPU (model and feature flags: the kernels are compiled for the CPU they run on, ``-march=native``,
or for ``$D2_NUCLEUS_NATIVE_ARCH``).
So another virtual environment, torch, compiler or CPU (a home folder shared by machines or VMs
exposing other instruction sets) gets its own build instead of recompiling over another's, and a
build that exists is loaded as it is (``torch.ops.load_library``; ninja is not run again).

A build is made in a temporary folder beside its final one and renamed into place when complete,
under an advisory file lock (``fcntl.flock``, released by the kernel if its holder dies): processes
starting together build once, the others wait (at most :data:`BUILD_WAIT_S`) and load that build; a
killed build leaves only its temporary folder, removed by the next build.
"""
import contextlib
import fcntl
import glob
import hashlib
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time

import torch

__all__ = ["native_ops", "build_native_ops", "build_dir", "build_inputs"]

logger = logging.getLogger(__name__)

CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
NAME = "d2_nucleus_native"


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
# AVX-512 where the CPU has it (measured ~10-20% faster than g++'s default 256-bit on 2 cores).
CFLAGS = ["-O3", f"-march={_march()}", "-mprefer-vector-width=512", "-ffp-contract=off", "-fopenmp"]
LDFLAGS = ["-fopenmp"]
#: Longest wait for another process's build of the same folder before giving up (a build takes
#: ~15-60 s).
BUILD_WAIT_S = 900

_lock = threading.Lock()
_state = {"tried": False, "ops": None}


def _cpu() -> list:
    """The CPU model and its feature flags (what -march=native compiles for)."""
    model, flags = "", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = " ".join(sorted(line.split(":", 1)[1].split()))
                if model and flags:
                    break
    except OSError:
        pass
    return [model or platform.processor() or platform.machine(), flags]


def _sources():
    return sorted(glob.glob(os.path.join(CSRC, "*.cpp")))


def _cpp_extension():
    """``torch.utils.cpp_extension``; its import warns "No CUDA runtime is found" on CPU machines:
    these kernels are CPU-only."""
    cpp_logger = logging.getLogger("torch.utils.cpp_extension")
    level = cpp_logger.level
    cpp_logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        cpp_logger.setLevel(level)
    return cpp_extension


def _compiler_version(compiler: str) -> list:
    path = shutil.which(compiler)
    try:
        out = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    return [os.path.realpath(path) if path else compiler, out.strip().splitlines()[0] if out.strip() else ""]


def build_inputs() -> list:
    """Everything the build depends on, as strings (hashed into the cache folder's name)."""
    cpp = _cpp_extension()
    inputs = []
    for path in _sources() + sorted(glob.glob(os.path.join(CSRC, "*.h"))):
        with open(path, "rb") as f:
            inputs.append(f"source {os.path.basename(path)} {hashlib.sha256(f.read()).hexdigest()}")
    inputs += ["cflags " + " ".join(CFLAGS), "ldflags " + " ".join(LDFLAGS)]
    inputs += [f"torch {torch.__version__} {torch.version.git_version}",
               f"torch location {os.path.dirname(os.path.realpath(torch.__file__))}",
               f"torch cxx11 abi {torch._C._GLIBCXX_USE_CXX11_ABI}"]
    inputs += [f"include {p}" for p in cpp.include_paths()]
    inputs += [f"python {sys.executable} {sys.version.split()[0]}", f"python include {sysconfig.get_paths()['include']}"]
    inputs += ["compiler " + " ".join(_compiler_version(cpp.get_cxx_compiler()))]
    inputs += ["cpu " + " | ".join(_cpu())]
    return inputs


def _cache_root() -> str:
    return os.environ.get("D2_NUCLEUS_NATIVE_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "d2_nucleus", "native"
    )


def build_dir(inputs=None) -> str:
    """The cache folder of this environment's build (:func:`build_inputs`)."""
    h = hashlib.sha256("\n".join(build_inputs() if inputs is None else inputs).encode())
    return os.path.join(_cache_root(), h.hexdigest()[:16])


@contextlib.contextmanager
def _file_lock(path: str, timeout: float):
    """An exclusive ``flock`` on ``path``, waiting at most ``timeout`` seconds (TimeoutError)."""
    with open(path, "a") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another process has been building in {path[:-5]} for over {timeout:.0f} s")
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _build(out: str, inputs, verbose: bool) -> None:
    """Compile into a temporary folder beside ``out`` (and load it), then rename it to ``out``.
    The caller holds ``out``'s lock."""
    root, key = os.path.split(out)
    for old in glob.glob(os.path.join(root, f".{key}.tmp-*")):  # killed builds
        pid = old.rsplit(".tmp-", 1)[1].split("-", 1)[0]
        if not pid.isdigit() or not _pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(out):  # a folder without a library (e.g. emptied by hand): built again
        shutil.rmtree(out)
    tmp = tempfile.mkdtemp(prefix=f".{key}.tmp-{os.getpid()}-", dir=root)
    try:
        _cpp_extension().load(
            name=NAME,
            sources=_sources(),
            extra_cflags=list(CFLAGS),  # copies: torch appends to them
            extra_ldflags=list(LDFLAGS),
            build_directory=tmp,
            is_python_module=False,
            verbose=verbose,
        )
        built = glob.glob(os.path.join(tmp, "*.so"))  # torch names a second build of one process NAME_v1
        if built != [os.path.join(tmp, NAME + ".so")] and len(built) == 1:
            os.rename(built[0], os.path.join(tmp, NAME + ".so"))
        with open(os.path.join(tmp, "build_inputs.txt"), "w") as f:
            f.write("\n".join(inputs) + "\n")
        os.chmod(tmp, 0o755)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build_native_ops(verbose: bool = False):
    """Compile (or load the cached build of) the kernels; returns ``torch.ops.d2_nucleus``. Raises on failure."""
    inputs = build_inputs()
    out = build_dir(inputs)
    library = os.path.join(out, NAME + ".so")
    if not os.path.isfile(library):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with _file_lock(out + ".lock", BUILD_WAIT_S):
            if not os.path.isfile(library):  # not built by another process meanwhile
                _build(out, inputs, verbose)  # also loads it
                return torch.ops.d2_nucleus
    torch.ops.load_library(library)
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

