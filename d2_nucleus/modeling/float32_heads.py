# -*- coding: utf-8 -*-
"""
Float32 box predictors under bfloat16 / float16 autocast: detection scores that can be ranked.

Under bfloat16 autocast Detectron2's ``FastRCNNOutputLayers`` computes its class logits with a
bf16 matmul and ``predict_probs`` takes a bf16 softmax, so every score is a bf16 number: steps
of 1/256 below 1.0 (1/512 above 0.5). Dense nuclei score 0.95-1.0, so hundreds of detections an
image tie on a handful of values (measured on nucleus_val with the CPU recipe: the top 100 of
each image spanned 3-13 distinct scores) and which detections make an image's top 100 (the
challenge metric) or win an overlap in a label map is decided by the tie order, not by the model.
The box regression deltas are rounded the same way (1/128 of a box size for deltas near 1).

:func:`convert_box_predictors` makes the RoI heads' box predictors run in float32 (their inputs
cast to float32, autocast off inside): two small linear layers (1024 -> classes + 1 and
1024 -> 4 x classes), a negligible share of the heads' time. Parameters and state-dict keys are
unchanged, so checkpoints load either way.
"""
from typing import Dict

import torch
from torch import nn

__all__ = ["float32_class", "convert_box_predictors"]

_FLOAT32_CLASSES: Dict[type, type] = {}


def _to_float32(x):
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float32:
        return x.float()
    if isinstance(x, (list, tuple)):
        return type(x)(_to_float32(v) for v in x)
    return x


def float32_class(cls: type) -> type:
    """The subclass of module class ``cls`` whose ``forward`` runs in float32 (one per class)."""
    if getattr(cls, "runs_in_float32", False):
        return cls
    if cls not in _FLOAT32_CLASSES:

        def forward(self, *args, **kwargs):
            device = next((p.device.type for p in self.parameters()), "cpu")
            with torch.autocast(device_type=device, enabled=False):
                return super(new_cls, self).forward(*_to_float32(args), **kwargs)

        new_cls = type("Float32" + cls.__name__, (cls,), {"forward": forward, "runs_in_float32": True,
                                                          "__module__": __name__})
        _FLOAT32_CLASSES[cls] = new_cls
    return _FLOAT32_CLASSES[cls]


def convert_box_predictors(roi_heads: nn.Module) -> int:
    """
    Make ``roi_heads.box_predictor`` (or each stage's, for cascades) run in float32, in place.
    Returns how many predictors were converted.
    """
    predictors = getattr(roi_heads, "box_predictor", None)
    if predictors is None:
        return 0
    if isinstance(predictors, nn.Module) and not isinstance(predictors, nn.ModuleList):
        predictors = [predictors]
    n = 0
    for p in predictors:
        if not getattr(p, "runs_in_float32", False):
            p.__class__ = float32_class(type(p))
            n += 1
    return n
