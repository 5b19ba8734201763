# -*- coding: utf-8 -*-
from contextlib import nullcontext

import torch

__all__ = ["cpu_autocast"]


def cpu_autocast(cfg):
    """
    bfloat16 autocast on the CPU when ``cfg.SOLVER.CPU_BF16`` is set (AVX-512 BF16 / AMX CPUs); a
    no-op otherwise. Training wraps each whole step in it (forward, losses and backward: autocast
    leaves the backward of each op in the dtype its forward ran in), evaluation and prediction
    their inference.
    """
    if cfg.SOLVER.CPU_BF16 and cfg.MODEL.DEVICE == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()
