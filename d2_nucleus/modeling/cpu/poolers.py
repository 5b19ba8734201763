# -*- coding: utf-8 -*-
"""
The RoI heads' pooler on CPU: every level in one call of a channels-last C++ RoIAlign (and its backward).

Detectron2's :class:`ROIPooler` runs torchvision's RoIAlign once a pyramid level; on CPU that
kernel reads float32 NCHW maps (so a bfloat16 channels-last model's maps are copied for it:
``roi_align.roi_features``) and computes one channel at a time with scalar code. The RoI heads'
two poolers were a quarter of the CPU inference time (BENCHMARKS.md "C++ kernels").
:class:`NucleusROIPooler` instead calls ``torch.ops.d2_nucleus.roi_align_nhwc``
(``csrc/roi_align_nhwc.cpp``, built by :mod:`.native`), which reads the channels-last maps as they
are, float32 or bfloat16, applies each sample's bilinear weights to all channels at once and writes
channels-last output for the heads' convolutions (BENCHMARKS.md "C++ kernels"). Its float32 values equal torchvision's bit for bit
(``tests/test_native_roi_align.py``); under bfloat16 autocast it writes bfloat16, the values the
heads' first layer casts torchvision's float32 output to.

In training its backward, ``roi_align_nhwc_backward``, adds each RoI's gradient to the
channels-last maps with threads taking blocks of channels, in torchvision's order: the same
gradients as torchvision's single-threaded backward, bit for bit.

It is used on CPU with an ``ROIAlign`` pooler (``ROIAlignV2`` or ``ROIAlign``) and the kernels
built; CUDA, other pooler types and no compiler run Detectron2's :class:`ROIPooler` as it is.
Same parameters (it has none) and state-dict keys.
"""
from typing import List

import torch
from torch import nn

from detectron2.layers import ROIAlign
from detectron2.modeling.poolers import ROIPooler, assign_boxes_to_levels, convert_boxes_to_pooler_format
from detectron2.structures import Boxes

from ..module_swap import swap_module_class
from .native import native_ops

__all__ = ["NucleusROIPooler", "convert_poolers", "native_pooling"]


def native_pooling(features_device: torch.device) -> bool:
    """Whether a :class:`NucleusROIPooler` takes the C++ kernel (CPU, kernels built)."""
    return features_device.type == "cpu" and native_ops() is not None


class _NativeROIAlign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rois, levels, scales, pooled, sampling_ratio, aligned, out_dtype, *maps):
        ctx.save_for_backward(rois, levels)
        ctx.args = (scales, pooled, sampling_ratio, aligned)
        ctx.shapes = [(m.shape, m.dtype) for m in maps]
        return torch.ops.d2_nucleus.roi_align_nhwc(
            list(maps), rois, levels, scales, pooled, sampling_ratio, aligned, out_dtype
        )

    @staticmethod
    def backward(ctx, grad):
        rois, levels = ctx.saved_tensors
        scales, pooled, sampling_ratio, aligned = ctx.args
        shape0 = ctx.shapes[0][0]
        grads = torch.ops.d2_nucleus.roi_align_nhwc_backward(
            grad, rois, levels, [shape0[0], shape0[1]], [s[2] for s, _ in ctx.shapes],
            [s[3] for s, _ in ctx.shapes], scales, pooled, sampling_ratio, aligned,
        )
        return (None,) * 7 + tuple(g.to(dtype) for g, (_, dtype) in zip(grads, ctx.shapes))


class NucleusROIPooler(ROIPooler):
    def forward(self, x: List[torch.Tensor], box_lists: List[Boxes]):
        if (
            not x
            or not box_lists
            or not all(isinstance(p, ROIAlign) for p in self.level_poolers)
            or x[0].dtype not in (torch.float32, torch.bfloat16)
            or not native_pooling(x[0].device)
        ):
            return super().forward(x, box_lists)
        assert len(x) == len(self.level_poolers) and len(box_lists) == x[0].size(0)
        first = self.level_poolers[0]
        rois = convert_boxes_to_pooler_format(box_lists).float()
        if len(self.level_poolers) == 1:
            levels = torch.zeros(len(rois), dtype=torch.long)
        else:
            levels = assign_boxes_to_levels(
                box_lists, self.min_level, self.max_level, self.canonical_box_size, self.canonical_level
            )
        maps = [f.contiguous(memory_format=torch.channels_last) for f in x]
        maps = [m if m.dtype == maps[0].dtype else m.to(maps[0].dtype) for m in maps]
        bf16_autocast = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        args = (rois, levels, [float(p.spatial_scale) for p in self.level_poolers], int(first.output_size[0]),
                int(first.sampling_ratio), bool(first.aligned), torch.bfloat16 if bf16_autocast else torch.float32)
        if torch.is_grad_enabled() and any(m.requires_grad for m in maps):
            return _NativeROIAlign.apply(*args, *maps)
        return torch.ops.d2_nucleus.roi_align_nhwc(list(maps), *args)


def convert_poolers(module: nn.Module) -> int:
    """Make every :class:`ROIPooler` in ``module`` a :class:`NucleusROIPooler` (same submodules). Returns how many."""
    return swap_module_class(module, ROIPooler, NucleusROIPooler)
