# -*- coding: utf-8 -*-
"""
GroupNorm that takes PyTorch's fast CPU kernel for the tensors it meets in a channels-last model.

PyTorch's CPU GroupNorm kernel for channels-last inputs is fast on feature maps (few images, large
H x W) and slow on RoI batches (hundreds of RoIs, H x W of 7 x 7 or 14 x 14); the contiguous (NCHW)
kernel is the other way round. Measured on 2 cores (bf16, 32 groups, 128 channels, forward /
forward + backward in ms; bench/bench_cpu_speed.py has the whole model):

==================  ====================  =============================
input               channels-last kernel  NCHW kernel (with both copies)
==================  ====================  =============================
[256, 128, 14, 14]  24.2 / -               1.6 / -
[512, 128, 7, 7]    11.3 / 24.4            2.9 / 10.8
[64, 128, 14, 14]   5.4 / 12.3             1.4 / 4.5
[2, 128, 64, 64]    0.3 / 5.1              1.3 / 3.9
[1, 128, 256, 256]  2.1 / 42.9             29.6 / 73.7
==================  ====================  =============================

:class:`NucleusGroupNorm` so runs channels-last inputs of at most ``SMALL_HW`` pixels a channel
through the NCHW kernel and hands the result back channels-last (the next convolution wants it),
and everything else as :class:`torch.nn.GroupNorm` does. Same parameters, same state-dict keys,
the same values up to the kernels' summation order.
"""
import torch
from torch import nn

__all__ = ["NucleusGroupNorm", "convert_group_norms"]

# Largest H x W a channel that takes the NCHW kernel: 32 x 32 (the RoI heads' 7 x 7, 14 x 14 and
# 28 x 28); the table above has the crossover between 14 x 14 and 64 x 64.
SMALL_HW = 32 * 32


class NucleusGroupNorm(nn.GroupNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.dim() == 4
            and x.shape[0] > 1
            and x.shape[2] * x.shape[3] <= SMALL_HW
            and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)
        ):
            y = super().forward(x.contiguous())
            return y.contiguous(memory_format=torch.channels_last)
        return super().forward(x)


def convert_group_norms(module: nn.Module) -> int:
    """
    Replace every :class:`torch.nn.GroupNorm` in ``module`` by a :class:`NucleusGroupNorm` that
    shares its parameters. Returns how many were replaced.
    """
    n = 0
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.GroupNorm:
                new = NucleusGroupNorm(child.num_groups, child.num_channels, child.eps, child.affine)
                if child.affine:
                    new.weight, new.bias = child.weight, child.bias
                new.train(child.training)
                setattr(parent, name, new)
                n += 1
    return n
