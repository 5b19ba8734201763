# -*- coding: utf-8 -*-
"""
The CPU's arithmetic precision: bfloat16 autocast where it is faster on this CPU, float32 elsewhere.

``SOLVER.CPU_BF16`` is ``"auto"`` (the default), ``True`` or ``False``. ``auto`` picks bfloat16 only
on CPUs whose matrix units compute it natively — AMX (``amx_bf16`` in ``/proc/cpuinfo``), where the
recipe trains and predicts faster in bf16 than in fp32 — and float32 on every other CPU: without
native bf16 (AVX2, e.g. AMD Zen 2/3, most laptops) oneDNN emulates it and a recipe step is many
times slower than in float32, and AVX-512 BF16 without AMX (AMD Zen 4/5, Intel Cooper Lake)
computes only dot products in bf16, where the recipe took several times its AMX time. The
measurements are in BENCHMARKS.md "Precision by machine". The choice is logged once, with its
reason. ``True`` / ``False`` force it.
"""
import functools
import logging
from contextlib import nullcontext
from typing import Tuple

import torch

__all__ = ["CPU_BF16_CHOICES", "cpu_autocast", "cpu_bf16_enabled", "cpu_flags", "resolve_cpu_bf16"]

logger = logging.getLogger(__name__)

CPU_BF16_CHOICES = ("auto", "True", "False")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def resolve_cpu_bf16(value) -> Tuple[bool, str]:
    """
    (bfloat16 on?, why) for a ``SOLVER.CPU_BF16`` value: ``"auto"`` decides from the CPU
    (see the module docstring), ``True``/``False`` (or their strings) force it.
    """
    text = str(value).strip()
    if text.lower() in ("true", "1"):
        return True, "SOLVER.CPU_BF16 True"
    if text.lower() in ("false", "0"):
        return False, "SOLVER.CPU_BF16 False"
    if text.lower() != "auto":
        raise ValueError(f"SOLVER.CPU_BF16 must be auto, True or False; got {value!r}")
    flags = cpu_flags()
    capability = torch.backends.cpu.get_cpu_capability()
    if "amx_bf16" in flags:
        return True, f"auto: the CPU has AMX (amx_bf16; torch CPU capability {capability})"
    if "avx512_bf16" in flags:
        return False, f"auto: the CPU has AVX-512 BF16 but no AMX (torch CPU capability {capability}): float32"
    return False, f"auto: the CPU has no native bfloat16 (torch CPU capability {capability}): float32"


_logged = set()


def cpu_bf16_enabled(cfg) -> bool:
    """Whether ``cfg`` runs under bfloat16 autocast: on the CPU, as ``SOLVER.CPU_BF16`` resolves."""
    if not str(cfg.MODEL.DEVICE).startswith("cpu"):
        return False
    on, why = resolve_cpu_bf16(cfg.SOLVER.CPU_BF16)
    if why not in _logged:
        _logged.add(why)
        logger.info("CPU precision: %s (%s)", "bfloat16 autocast" if on else "float32", why)
    return on


def cpu_autocast(cfg):
    """
    bfloat16 autocast on the CPU when :func:`cpu_bf16_enabled`; a no-op otherwise. Training wraps
    each whole step in it (forward, losses and backward: autocast leaves the backward of each op in
    the dtype its forward ran in), evaluation and prediction their inference.
    """
    if cpu_bf16_enabled(cfg):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()
