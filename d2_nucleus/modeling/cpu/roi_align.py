# -*- coding: utf-8 -*-
"""
RoIAlign on CPU threads, and the RoI heads' features converted once instead of at every RoIAlign.

torchvision's CPU RoIAlign runs on one thread, forward and backward, while the convolutions
around it use every core. :class:`ThreadedROIAlign` splits the RoIs into one chunk a thread
(torchvision's kernel releases the GIL) and, in the backward pass, sums the chunks' gradients.
Every output value is computed by the same kernel from the same inputs, so forward outputs are
bitwise identical; gradients differ only in summation order (speed: BENCHMARKS.md "Figures
behind the code").

RoIAlign runs in float32 on contiguous (NCHW) input: under autocast torchvision casts its input to
float32, and its CPU kernel makes it contiguous, for every call, so a bfloat16 channels-last model
copied its whole stride-4 feature map at each of the mask head's chunks (14 copies of
[1, 128, 256, 256] a 1000 x 1000 image). :func:`roi_features` makes that copy once, before the RoI
heads.
"""
from typing import Dict

import torch
from torch import nn

from detectron2.layers import ROIAlign

from ...utils.threads import thread_pool as _pool
from ..module_swap import replace_modules

__all__ = ["ThreadedROIAlign", "convert_roi_aligns", "roi_features"]


def _chunks(rois: torch.Tensor, n: int):
    return [c for c in rois.chunk(n) if len(c)]


class _ThreadedROIAlignFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, rois, spatial_scale, output_size, sampling_ratio, aligned, threads):
        ctx.save_for_backward(rois)
        ctx.args = (spatial_scale, output_size, sampling_ratio, aligned, threads, input.shape)
        op = torch.ops.torchvision.roi_align
        chunks = _chunks(rois, threads)
        if len(chunks) <= 1:
            return op(input, rois, spatial_scale, output_size[0], output_size[1], sampling_ratio, aligned)
        parts = list(_pool(threads).map(
            lambda r: op(input, r, spatial_scale, output_size[0], output_size[1], sampling_ratio, aligned), chunks
        ))
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad_output):
        (rois,) = ctx.saved_tensors
        spatial_scale, output_size, sampling_ratio, aligned, threads, shape = ctx.args
        op = torch.ops.torchvision._roi_align_backward
        grad_output = grad_output.contiguous()
        sizes = [len(c) for c in _chunks(rois, threads)]

        def run(args):
            g, r = args
            return op(g, r, spatial_scale, output_size[0], output_size[1], *shape, sampling_ratio, aligned)

        pairs = list(zip(grad_output.split(sizes), rois.split(sizes)))
        if len(pairs) <= 1:
            grads = [run((grad_output, rois))]
        else:
            grads = list(_pool(threads).map(run, pairs))
        grad = grads[0]
        for g in grads[1:]:
            grad.add_(g)
        return grad, None, None, None, None, None, None


class ThreadedROIAlign(ROIAlign):
    """
    Detectron2's :class:`ROIAlign` whose CPU forward and backward run on ``threads`` threads
    (0: ``torch.get_num_threads()``). Other devices, and calls with a single thread, run as
    :class:`ROIAlign` does.
    """

    def __init__(self, *args, threads: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.threads = threads

    def forward(self, input, rois):
        assert rois.dim() == 2 and rois.size(1) == 5
        threads = self.threads or torch.get_num_threads()
        if input.device.type != "cpu" or threads <= 1 or input.is_quantized:
            return super().forward(input, rois)
        # what torchvision's autocast wrapper and CPU kernel do to the input (a no-op after
        # roi_features)
        input = _as_roi_input(input)
        return _ThreadedROIAlignFunction.apply(
            input, rois.to(dtype=input.dtype), float(self.spatial_scale), tuple(self.output_size),
            int(self.sampling_ratio), bool(self.aligned), threads,
        )


def convert_roi_aligns(module: nn.Module, threads: int = 0) -> int:
    """Replace every Detectron2 :class:`ROIAlign` in ``module`` by a :class:`ThreadedROIAlign`."""
    return replace_modules(module, ROIAlign, lambda child: ThreadedROIAlign(
        child.output_size, child.spatial_scale, child.sampling_ratio, aligned=child.aligned, threads=threads))


def _as_roi_input(x: torch.Tensor) -> torch.Tensor:
    # one copy at most (``.float().contiguous()`` copies a bf16 channels-last map twice)
    return x.to(dtype=torch.float32, memory_format=torch.contiguous_format)


def roi_features(features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The feature maps as RoIAlign reads them: float32, contiguous (no copy where they are)."""
    return {k: _as_roi_input(v) for k, v in features.items()}
