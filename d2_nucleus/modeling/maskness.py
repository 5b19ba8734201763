# -*- coding: utf-8 -*-
"""
Maskness rescoring: rank detections by how confident their own mask is, not by the box
classifier alone.

Mask R-CNN scores a detection with its box classifier only. A detection whose mask is unsure
(a blurry nucleus, two touching nuclei in one box, a fragment) scores as high as a crisp one,
so the top-N detections the challenge metric counts (AP@0.5 with 100 detections an image)
include detections whose mask misses IoU 0.5. SOLOv2 ("maskness") rescores with the mean
probability of the pixels its mask keeps; this needs no training and no extra head (unlike
Mask Scoring R-CNN, :mod:`.mask_scoring`):

    maskness = mean of p over the box-local mask pixels with p >= mask threshold (0 if none)
    score    = class score * maskness ** power

The box-local probabilities (N x 1 x M x M, from Detectron2's ``mask_rcnn_inference``) are used
as they are, before pasting, so it costs one reduction over N x M x M values.
"""
from typing import List

import torch

from detectron2.structures import Instances

__all__ = ["maskness", "maskness_rescore"]


def maskness(mask_probs: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """
    Args:
        mask_probs: (N, 1, M, M) or (N, M, M) mask probabilities in [0, 1].
        threshold: a pixel belongs to the mask when its probability >= this.

    Returns:
        (N,) float32: the mean probability of each mask's pixels (0 for an empty mask).
    """
    if mask_probs.dim() == 4:
        mask_probs = mask_probs[:, 0]
    if mask_probs.dim() != 3:
        raise ValueError(f"need N x M x M or N x 1 x M x M mask probabilities, got {tuple(mask_probs.shape)}")
    probs = mask_probs.float().flatten(1)
    keep = probs >= threshold
    total = (probs * keep).sum(dim=1)
    count = keep.sum(dim=1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))


def maskness_rescore(instances: List[Instances], threshold: float = 0.5, power: float = 1.0) -> List[Instances]:
    """
    Rescore each image's detections in place: ``pred_maskness`` = :func:`maskness` of
    ``pred_masks`` (box-local probabilities), ``cls_scores`` = the scores before (unless a previous
    rescoring, e.g. Mask Scoring R-CNN's, already kept them), ``scores`` *= maskness ** power.
    The order of the instances is unchanged. ``power`` 0 leaves the scores as they are.

    Returns ``instances``.
    """
    if power < 0:
        raise ValueError(f"maskness power must be >= 0, got {power}")
    for inst in instances:
        if power == 0 or not inst.has("pred_masks"):
            continue
        m = maskness(inst.pred_masks, threshold).to(device=inst.scores.device)
        if not inst.has("cls_scores"):
            inst.cls_scores = inst.scores
        inst.pred_maskness = m
        inst.scores = inst.scores * m.pow(power).to(inst.scores.dtype)
    return instances
