# -*- coding: utf-8 -*-
"""
glibc's allocator settings for CPU training and inference.

glibc serves allocations above ``M_MMAP_THRESHOLD`` (dynamic, at most 32 MiB on 64-bit) with a
fresh ``mmap`` and gives them back with ``munmap`` when freed, so every large activation of every
step page-faults its memory in again (measured: BENCHMARKS.md "CPU speed options"). jemalloc / tcmalloc through
``LD_PRELOAD`` do the same job but are not installable from the package registry here and need
the variable set before the process starts; ``mallopt`` works from inside a running process.

The cost: memory freed by a step stays in the process for the next one instead of going back to the
operating system, which raises the peak RSS (bench/bench_cpu_speed.py; BENCHMARKS.md "CPU speed
options").

The setting is process-wide, so the entry points apply it (:func:`tune_process`: tools/, the Dask
workers), never a model's constructor.
"""
import ctypes
import ctypes.util
import logging
import platform

__all__ = ["tune_malloc", "tune_process"]

logger = logging.getLogger(__name__)

# mallopt parameter numbers (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

_done = {}


def tune_malloc(threshold: int = 1 << 30) -> bool:
    """
    Raise glibc's mmap and trim thresholds to ``threshold`` bytes for this process (once).

    Returns:
        True when the settings are in effect, False where the C library is not glibc (macOS,
        musl) or refused them; nothing else changes then.
    """
    if threshold in _done:
        return _done[threshold]
    ok = False
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            ok = bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold))) and bool(
                libc.mallopt(M_TRIM_THRESHOLD, int(threshold))
            )
        except (OSError, AttributeError):
            ok = False
    if not ok:
        logger.info("malloc thresholds not changed (not glibc, or mallopt refused)")
    _done[threshold] = ok
    return ok


def tune_process(cfg) -> bool:
    """:func:`tune_malloc` when ``cfg`` runs on the CPU with ``MODEL.CPU.TUNE_MALLOC``; whether it is in effect."""
    if str(cfg.MODEL.DEVICE).startswith("cpu") and bool(cfg.MODEL.CPU.TUNE_MALLOC):
        return tune_malloc()
    return False
