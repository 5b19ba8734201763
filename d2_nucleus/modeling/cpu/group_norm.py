# -*- coding: utf-8 -*-
"""
GroupNorm that takes PyTorch's fast CPU kernel for the tensors it meets in a channels-last model.

PyTorch's CPU GroupNorm kernel for channels-last inputs is fast on feature maps (few images, large
H x W) and slow on RoI batches (hundreds of RoIs, H x W of 7 x 7 or 14 x 14); the contiguous (NCHW)
kernel is the other way round (the crossover lies between 14 x 14 and 64 x 64 a channel; the
measurements are in BENCHMARKS.md "Figures behind the code").

:class:`NucleusGroupNorm` so runs channels-last inputs of at most ``SMALL_HW`` pixels a channel
through the NCHW kernel and hands the result back channels-last (the next convolution wants it),
and everything else as :class:`torch.nn.GroupNorm` does. Same parameters, same state-dict keys,
the same values up to the kernels' summation order.

Where d2_nucleus's C++ kernels are built (:mod:`.native`; ``native``), channels-last CPU inputs
instead go through ``torch.ops.d2_nucleus.group_norm_nhwc`` (``csrc/group_norm_nhwc.cpp``):
channels-last in and out, no layout copy, the ReLU that follows the norm in the RoI heads' conv
layers fused in (:func:`fuse_group_norm_relus`), and in training its own backward (PyTorch's
channels-last backward is the slow one on feature maps; BENCHMARKS.md "C++ kernels"). Float32 statistics: values within 1e-5 of float32 ``F.group_norm``, gradients
too (``tests/test_cpu_speed.py``).
"""
import torch
from torch import nn

from detectron2.layers import Conv2d

from ..module_swap import replace_modules, swap_module_class
from .native import native_ops

__all__ = ["NucleusGroupNorm", "convert_group_norms", "fuse_group_norm_relus"]

# Largest H x W a channel that takes the NCHW kernel: 32 x 32 (the RoI heads' 7 x 7, 14 x 14 and
# 28 x 28); the crossover lies between 14 x 14 and 64 x 64 (BENCHMARKS.md "Figures behind the code").
SMALL_HW = 32 * 32


class _NativeGroupNorm(torch.autograd.Function):
    """The C++ GroupNorm (+ ReLU) of channels-last maps with its C++ backward (training)."""

    @staticmethod
    def forward(ctx, x, weight, bias, groups, eps, relu):
        y, mean, rstd = torch.ops.d2_nucleus.group_norm_nhwc_train(x, groups, weight, bias, eps, relu)
        ctx.save_for_backward(x, y if relu else None, mean, rstd, weight)
        ctx.args = (groups, relu)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, y, mean, rstd, weight = ctx.saved_tensors
        groups, relu = ctx.args
        dx, dw, db = torch.ops.d2_nucleus.group_norm_nhwc_backward(
            grad, x, y if relu else x, mean, rstd, weight, groups, relu
        )
        if weight is None:
            return dx, None, None, None, None, None
        return dx, dw.to(weight.dtype), db.to(weight.dtype), None, None, None


class NucleusGroupNorm(nn.GroupNorm):
    # ``relu``: a ReLU follows (fuse_group_norm_relus moved it here from the conv layer)
    relu = False
    # ``native``: channels-last CPU inputs take the C++ kernels where they are built
    native = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        if (
            channels_last
            and self.native
            and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.bfloat16)
            and native_ops() is not None
        ):
            if torch.is_grad_enabled() and (x.requires_grad or (self.affine and self.weight.requires_grad)):
                return _NativeGroupNorm.apply(x, self.weight, self.bias, self.num_groups, self.eps, self.relu)
            return torch.ops.d2_nucleus.group_norm_nhwc(x, self.num_groups, self.weight, self.bias, self.eps, self.relu)
        if channels_last and x.shape[0] > 1 and x.shape[2] * x.shape[3] <= SMALL_HW:
            y = super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last)
        else:
            y = super().forward(x)
        return torch.relu(y) if self.relu else y


def convert_group_norms(module: nn.Module, native: bool = False) -> int:
    """
    Replace every :class:`torch.nn.GroupNorm` in ``module`` by a :class:`NucleusGroupNorm` that
    shares its parameters (``native``: channels-last CPU inputs take the C++ kernels). Returns how
    many were replaced.
    """

    def build(child: nn.GroupNorm) -> NucleusGroupNorm:
        new = NucleusGroupNorm(child.num_groups, child.num_channels, child.eps, child.affine)
        new.native = native
        if child.affine:
            new.weight, new.bias = child.weight, child.bias
        return new

    return replace_modules(module, nn.GroupNorm, build)


def fuse_group_norm_relus(module: nn.Module) -> int:
    """
    Move the ReLU of every Detectron2 :class:`Conv2d` layer (conv -> norm -> activation) whose
    norm is a :class:`NucleusGroupNorm` into the norm, where the C++ kernel applies it in the same
    pass (the RoI heads' conv layers). Same computation, no parameter moves. Returns how many.
    """
    n = 0
    for m in module.modules():
        if isinstance(m, Conv2d) and isinstance(m.norm, NucleusGroupNorm) and isinstance(m.activation, nn.ReLU):
            m.norm.relu = True
            m.activation = None
            n += 1
    return n
