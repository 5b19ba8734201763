# -*- coding: utf-8 -*-
"""
GroupNorm with statistics fixed after training: a backbone whose outputs do not depend on what
else is in its input.

GroupNorm normalises each group of channels by the mean and variance over the *whole* input
image. A nucleus so gets different features depending on the rest of the image: in a whole-slide
tile next to glass, or next to other tissue, it is not the nucleus of the same image predicted
alone (measured on the real-image mosaic, BENCHMARKS.md "Seams": the same 1000 x 1000 image
alone vs centred in glass, 282 -> 287 nuclei and PQ 0.457 -> 0.296 with the 550-iteration
recipe), so tiles cannot reproduce per-image results whatever the seam rule.

:class:`FrozenGroupNorm` normalises with per-group statistics fixed once, like BatchNorm at
inference: the layer becomes a per-channel affine map and the backbone is translation-equivariant
up to its receptive field, so a tile gives the same features as any other input that holds the
same pixels around a nucleus. The statistics are the average, over a calibration set (the
training images), of each image's own per-group mean and variance
(:func:`calibrate_frozen_group_norms`; ``tools/freeze_group_norm.py`` writes the calibrated
checkpoint). Parameters keep GroupNorm's names (``weight``, ``bias``); the statistics are the
buffers ``group_mean`` and ``group_var`` (NaN until calibrated: such a layer refuses to run).

Only feature-map normalisations are frozen (``MODEL.FROZEN_GROUP_NORM`` converts the backbone,
FPN included): the RoI heads' GroupNorms see one RoI each, already independent of the rest.
"""
from typing import Callable, Iterable

import torch
from torch import nn

from .module_swap import replace_modules

__all__ = ["FrozenGroupNorm", "convert_frozen_group_norms", "calibrate_frozen_group_norms"]


class FrozenGroupNorm(nn.Module):
    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"num_channels {num_channels} is not divisible by num_groups {num_groups}")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_channels))
            self.bias = nn.Parameter(torch.zeros(num_channels))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("group_mean", torch.full((num_groups,), float("nan")))
        self.register_buffer("group_var", torch.full((num_groups,), float("nan")))
        # While calibrating: normalise as GroupNorm and collect each input's statistics.
        self._collect = None

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._collect is not None:
            xg = x.detach().float().reshape(x.shape[0], self.num_groups, -1)
            self._collect.append((xg.mean(dim=2), xg.var(dim=2, unbiased=False)))
            return nn.functional.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        if torch.isnan(self.group_mean).any() or torch.isnan(self.group_var).any():
            raise RuntimeError(
                "FrozenGroupNorm has no statistics: load a checkpoint written by tools/freeze_group_norm.py "
                "(MODEL.FROZEN_GROUP_NORM needs calibrated weights)"
            )
        # Per-channel statistics through the inference-mode BatchNorm kernel: one fp32 pass, and
        # faster than x * scale + shift in forward and backward (BENCHMARKS.md "Figures behind the code").
        per_group = self.num_channels // self.num_groups
        return nn.functional.batch_norm(
            x, self.group_mean.repeat_interleave(per_group), self.group_var.repeat_interleave(per_group),
            self.weight, self.bias, False, 0.0, self.eps,
        )


def convert_frozen_group_norms(module: nn.Module) -> int:
    """
    Replace every :class:`torch.nn.GroupNorm` (and subclass) in ``module`` by a
    :class:`FrozenGroupNorm` sharing its parameters (statistics uncalibrated). Returns how many.
    """

    def build(child: nn.GroupNorm) -> "FrozenGroupNorm":
        new = FrozenGroupNorm(child.num_groups, child.num_channels, child.eps, child.affine)
        if child.affine:
            new.weight, new.bias = child.weight, child.bias
        return new.to(device=child.weight.device if child.affine else None)

    return replace_modules(module, lambda m: isinstance(m, nn.GroupNorm), build)


@torch.no_grad()
def calibrate_frozen_group_norms(module: nn.Module, run: Callable[[object], object], batches: Iterable) -> int:
    """
    Set the statistics of every :class:`FrozenGroupNorm` in ``module``: ``run(batch)`` for each
    batch, with the layers normalising as GroupNorm (each input by its own statistics, so every
    layer sees what it saw in training) while they record each input's per-group mean and
    variance; each layer's ``group_mean`` / ``group_var`` become their averages over all inputs.

    Returns the number of inputs (images) seen.
    """
    layers = [m for m in module.modules() if isinstance(m, FrozenGroupNorm)]
    if not layers:
        raise ValueError("calibrate_frozen_group_norms: the module has no FrozenGroupNorm")
    for m in layers:
        m._collect = []
    try:
        for batch in batches:
            run(batch)
        n = sum(s[0].shape[0] for s in layers[0]._collect)
        if n == 0:
            raise ValueError("calibrate_frozen_group_norms: no input was seen")
        for m in layers:
            m.group_mean.copy_(torch.cat([s[0] for s in m._collect]).mean(dim=0))
            m.group_var.copy_(torch.cat([s[1] for s in m._collect]).mean(dim=0))
    finally:
        for m in layers:
            m._collect = None
    return n
