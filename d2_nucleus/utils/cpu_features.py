# -*- coding: utf-8 -*-
"""
The choices that depend on which CPU runs the model, decided in one place from its feature flags
(``/proc/cpuinfo``) and torch's CPU capability, each with the reason the startup log prints:

* the arithmetic precision (``SOLVER.CPU_BF16``, :func:`resolve_cpu_bf16`): bfloat16 autocast only
  on CPUs whose matrix units compute it natively — AMX (``amx_bf16``), where the recipe trains and
  predicts faster in bf16 than in fp32 — and float32 on every other CPU: without native bf16 (AVX2,
  e.g. AMD Zen 2/3, most laptops) PyTorch runs bf16 convolutions in its reference kernels, many
  times slower than float32, and AVX-512 BF16 without AMX (AMD Zen 4/5, Intel Cooper Lake) computes
  only dot products in bf16, where the recipe took several times its AMX time;
* the 3 x 3 convolutions at float32 inference (``MODEL.CPU.CONV3X3``, :func:`resolve_conv3x3`):
  NNPACK's Winograd kernels on CPUs with AVX2 + FMA and no AVX-512, where oneDNN has only its direct
  convolution; oneDNN elsewhere (with AVX-512 its own kernels are twice as wide as NNPACK's).

The measurements behind both are in BENCHMARKS.md ("Precision by machine", "Seconds per mm^2").
``True`` / ``False`` and ``onednn`` / ``winograd`` force a choice.
"""
import functools
from typing import Tuple

__all__ = ["CPU_BF16_CHOICES", "cpu_flags", "nnpack_available", "resolve_conv3x3", "resolve_cpu_bf16"]

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


@functools.lru_cache(maxsize=1)
def nnpack_available() -> bool:
    """Whether PyTorch has NNPACK on this machine (its check also initialises it: call it before NNPACK's ops)."""
    import torch

    try:
        return bool(torch._nnpack_available())
    except (AttributeError, RuntimeError):
        return False


def _capability() -> str:
    import torch

    return torch.backends.cpu.get_cpu_capability()


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
    capability = _capability()
    if "amx_bf16" in flags:
        return True, f"auto: the CPU has AMX (amx_bf16; torch CPU capability {capability})"
    if "avx512_bf16" in flags:
        return False, f"auto: the CPU has AVX-512 BF16 but no AMX (torch CPU capability {capability}): float32"
    return False, f"auto: the CPU has no native bfloat16 (torch CPU capability {capability}): float32"


def resolve_conv3x3(value) -> Tuple[str, str]:
    """
    (``"onednn"`` or ``"winograd"``, why) for a ``MODEL.CPU.CONV3X3`` value: ``"auto"`` takes
    Winograd where torch's CPU capability is AVX2 (the CPU has AVX2 and FMA, no AVX-512: an
    emulated lower ISA, ``ATEN_CPU_CAPABILITY``, counts as what it emulates) and NNPACK is there.
    """
    text = str(value).strip().lower()
    if text in ("onednn", "winograd"):
        return text, f"MODEL.CPU.CONV3X3 {text}"
    if text != "auto":
        raise ValueError(f"MODEL.CPU.CONV3X3 must be auto, onednn or winograd; got {value!r}")
    capability = _capability()
    flags = cpu_flags()
    if capability == "AVX2" and {"avx2", "fma"} <= flags and "avx512f" not in flags:
        if nnpack_available():
            return "winograd", "auto: AVX2 without AVX-512 (oneDNN has no Winograd there): NNPACK's Winograd"
        return "onednn", "auto: AVX2 without AVX-512, but this PyTorch has no NNPACK: oneDNN"
    return "onednn", f"auto: torch CPU capability {capability}: oneDNN's convolution"
