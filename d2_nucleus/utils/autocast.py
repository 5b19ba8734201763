# -*- coding: utf-8 -*-
"""
The CPU's arithmetic precision: bfloat16 autocast where it is faster on this CPU, float32 elsewhere.

``SOLVER.CPU_BF16`` is ``"auto"`` (the default), ``True`` or ``False``; :mod:`.cpu_features`
decides ``auto`` from the CPU (with the other per-CPU choices) and says why. The choice is logged
once, with its reason.
"""
import logging
from contextlib import nullcontext

import torch

from .cpu_features import CPU_BF16_CHOICES, cpu_flags, resolve_cpu_bf16

__all__ = ["CPU_BF16_CHOICES", "cpu_autocast", "cpu_bf16_enabled", "cpu_flags", "resolve_cpu_bf16"]

logger = logging.getLogger(__name__)


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
