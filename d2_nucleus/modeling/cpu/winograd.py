# -*- coding: utf-8 -*-
"""
3 x 3 convolutions by Winograd's algorithm at float32 inference on CPUs where it is faster.

oneDNN computes a 3 x 3 convolution directly (9 multiply-adds an output value and input channel);
Winograd's minimal filtering computes it from tiles with fewer multiplications. oneDNN has it only
for AVX-512 CPUs; PyTorch's CPU builds ship NNPACK, whose Winograd kernels (F(6x6, 3x3)) are written
for AVX2 + FMA. :class:`WinogradConv2d` takes NNPACK for inputs whose sides lie in
``[MIN_SIDE, MAX_SIDE]`` (the largest maps, stride 4, and the box head's 7 x 7 RoIs stay with oneDNN)
and oneDNN for the rest. It is an option, not the default (``MODEL.CPU.CONV3X3 onednn``): on the one
AVX2 CPU measured (AMD Zen 3, a loaded machine) a slide took 3% fewer CPU seconds with it, within the
noise, and its wall time was not better (BENCHMARKS.md "Seconds per mm² of tissue").

The values are those of a float32 convolution up to the algorithm's rounding (relative differences
~1e-5 of the largest output, ``tests/test_cpu_speed.py``); training, autograd, bfloat16 autocast
and other devices run the layer's own convolution. Same parameters and state-dict keys.
"""
import torch
from torch import nn

from detectron2.layers import Conv2d

from ...utils.cpu_features import nnpack_available
from ..module_swap import swap_module_class

__all__ = ["WinogradConv2d", "convert_winograd_convs"]

# Input sides (H and W) the Winograd path takes: the mask head's 14 x 14 RoIs up to the stride-8 maps
# of ~1,300 px inputs; the stride-4 maps and the box head's 7 x 7 RoIs are faster in oneDNN.
MIN_SIDE = 14
MAX_SIDE = 200


class WinogradConv2d(Conv2d):
    """A Detectron2 :class:`Conv2d` (3 x 3, stride 1) whose float32 CPU inference goes through NNPACK where it pays."""

    def _winograd(self, x: torch.Tensor) -> bool:
        return (
            not self.training
            and not torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
            and x.dim() == 4
            and MIN_SIDE <= min(x.shape[2], x.shape[3])
            and max(x.shape[2], x.shape[3]) <= MAX_SIDE
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._winograd(x):
            return super().forward(x)
        channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        y = torch._nnpack_spatial_convolution(x.contiguous(), self.weight.contiguous(), self.bias, list(self.padding))
        if channels_last:  # the next layers (and the C++ GroupNorm) want the layout they had
            y = y.contiguous(memory_format=torch.channels_last)
        if self.norm is not None:
            y = self.norm(y)
        if self.activation is not None:
            y = self.activation(y)
        return y


def _eligible(m: nn.Module) -> bool:
    return (
        type(m) is Conv2d
        and m.kernel_size == (3, 3)
        and m.stride == (1, 1)
        and m.dilation == (1, 1)
        and m.groups == 1
        and m.padding_mode == "zeros"
        and isinstance(m.padding, tuple)
    )


def convert_winograd_convs(model: nn.Module) -> int:
    """
    Give every 3 x 3, stride-1 Detectron2 :class:`Conv2d` of ``model`` the Winograd path
    (:class:`WinogradConv2d`); nothing where NNPACK is missing. Returns how many.
    """
    if not nnpack_available():
        return 0
    return swap_module_class(model, _eligible, WinogradConv2d)
