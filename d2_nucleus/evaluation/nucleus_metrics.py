# -*- coding: utf-8 -*-
"""
Nucleus segmentation metrics from two instance label maps (H x W, 0 = background, any positive
integer = one instance; labels need not be contiguous):

* AJI, the Aggregated Jaccard Index (Kumar et al., IEEE TMI 2017), as HoVer-Net's
  ``get_fast_aji``: each ground-truth nucleus is paired with the prediction of highest IoU among
  those it overlaps (ties: the smaller prediction label; a prediction may be paired with several
  nuclei), AJI = sum of paired intersections / (sum of paired unions + area of the nuclei
  without a pair + area of the predictions paired with none).
* PQ = DQ x SQ, panoptic quality (Kirillov et al., CVPR 2019) with HoVer-Net's conventions:
  pairs with IoU > 0.5 (strictly; such pairs are unique), DQ = TP / (TP + FP/2 + FN/2),
  SQ = mean IoU of the pairs (0 without pairs).
* Dice: pixel-level foreground Dice ("Dice1" in HoVer-Net), 2 |G & P| / (|G| + |P|).

All metrics come from one sparse table of pairwise intersections (the non-zero pairs of
gt label x pred label over the pixels where both are foreground), built with one np.unique,
so the cost is O(H*W) plus a sort of the overlapping pixels, never a loop over pairs of masks.

Values are fractions in [0, 1]. When both maps are empty every metric is undefined (NaN);
when exactly one is empty they are all 0.
"""
from typing import Dict, List, NamedTuple, Sequence

import numpy as np

from ..utils.label_map import annotations_to_label_map, rles_to_label_map

__all__ = [
    "image_nucleus_metrics",
    "InstanceContingency",
    "instance_contingency",
    "aggregated_jaccard_index",
    "panoptic_quality",
    "dice_coefficient",
    "compute_nucleus_metrics",
    "NUCLEUS_METRIC_NAMES",
]

NUCLEUS_METRIC_NAMES = ("AJI", "PQ", "DQ", "SQ", "Dice")


class InstanceContingency(NamedTuple):
    """Sparse pairwise-intersection table of two label maps (instance indices are 0-based)."""

    gt_areas: np.ndarray  # (G,) pixels of each ground-truth instance, in increasing label order
    pred_areas: np.ndarray  # (P,) pixels of each predicted instance, in increasing label order
    gt_index: np.ndarray  # (K,) ground-truth instance of each overlapping pair
    pred_index: np.ndarray  # (K,) predicted instance of each overlapping pair
    intersections: np.ndarray  # (K,) > 0 pixels shared by the pair
    foreground_intersection: int  # pixels that are foreground in both maps

    @property
    def ious(self) -> np.ndarray:
        unions = self.gt_areas[self.gt_index] + self.pred_areas[self.pred_index] - self.intersections
        return self.intersections / unions


def _compact_labels(label_map: np.ndarray, name: str):
    """(labels as 0..N with 0 = background, areas of instances 1..N)."""
    if label_map.dtype.kind not in "iub":
        raise TypeError(f"{name} label map must be integer, got {label_map.dtype}")
    flat = label_map.reshape(-1).astype(np.int64, copy=False)
    if flat.size and flat.min() < 0:
        raise ValueError(f"{name} label map has negative labels")
    max_label = int(flat.max()) if flat.size else 0
    if max_label <= 4 * flat.size + 1024:
        counts = np.bincount(flat, minlength=max_label + 1)
        present = np.flatnonzero(counts[1:]) + 1
        lut = np.zeros(max_label + 1, dtype=np.int64)
        lut[present] = np.arange(1, len(present) + 1)
        return lut[flat], counts[present]
    labels, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    if labels[0] != 0:  # no background pixel
        return inverse.reshape(-1) + 1, counts
    return inverse.reshape(-1), counts[1:]


def instance_contingency(gt: np.ndarray, pred: np.ndarray) -> InstanceContingency:
    """
    The sparse intersection table of two label maps of the same shape.

    Args:
        gt, pred: integer label maps (0 background).
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"label maps differ in shape: gt {gt.shape}, pred {pred.shape}")
    g, gt_areas = _compact_labels(gt, "gt")
    p, pred_areas = _compact_labels(pred, "pred")
    both = (g > 0) & (p > 0)
    codes = (g[both] - 1) * max(len(pred_areas), 1) + (p[both] - 1)
    pairs, inter = np.unique(codes, return_counts=True)
    num_pred = max(len(pred_areas), 1)
    return InstanceContingency(
        gt_areas=gt_areas.astype(np.int64),
        pred_areas=pred_areas.astype(np.int64),
        gt_index=pairs // num_pred,
        pred_index=pairs % num_pred,
        intersections=inter.astype(np.int64),
        foreground_intersection=int(both.sum()),
    )


def _as_table(gt, pred=None) -> InstanceContingency:
    if isinstance(gt, InstanceContingency):
        return gt
    return instance_contingency(gt, pred)


def aggregated_jaccard_index(gt, pred=None) -> float:
    """
    AJI of two label maps (or of an :class:`InstanceContingency` passed as ``gt``).
    NaN when both are empty.
    """
    t = _as_table(gt, pred)
    total = t.gt_areas.sum() + t.pred_areas.sum()
    if total == 0:
        return float("nan")
    if len(t.intersections) == 0:
        return 0.0
    ious = t.ious
    # best prediction of each ground truth: sort by gt, then IoU descending, then pred label
    order = np.lexsort((t.pred_index, -ious, t.gt_index))
    gi = t.gt_index[order]
    first = np.ones(len(gi), dtype=bool)
    first[1:] = gi[1:] != gi[:-1]
    best = order[first]
    inter = t.intersections[best]
    best_gt, best_pred = t.gt_index[best], t.pred_index[best]
    union = t.gt_areas[best_gt] + t.pred_areas[best_pred] - inter
    unpaired_gt = np.ones(len(t.gt_areas), dtype=bool)
    unpaired_gt[best_gt] = False
    unpaired_pred = np.ones(len(t.pred_areas), dtype=bool)
    unpaired_pred[best_pred] = False
    denominator = union.sum() + t.gt_areas[unpaired_gt].sum() + t.pred_areas[unpaired_pred].sum()
    return float(inter.sum() / denominator)


def panoptic_quality(gt, pred=None, match_iou: float = 0.5) -> Dict[str, float]:
    """
    {"PQ", "DQ", "SQ"} of two label maps (or of an :class:`InstanceContingency` passed as
    ``gt``), pairing instances with IoU > ``match_iou`` (>= 0.5 so that pairs are unique).
    NaN when both are empty; SQ (and PQ) are 0 when nothing is paired.
    """
    if match_iou < 0.5:
        raise ValueError("match_iou must be >= 0.5 for unique matching")
    t = _as_table(gt, pred)
    num_gt, num_pred = len(t.gt_areas), len(t.pred_areas)
    if num_gt + num_pred == 0:
        nan = float("nan")
        return {"PQ": nan, "DQ": nan, "SQ": nan}
    ious = t.ious
    matched = ious[ious > match_iou]
    tp = len(matched)
    fp, fn = num_pred - tp, num_gt - tp
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = float(matched.sum() / tp) if tp else 0.0
    return {"PQ": dq * sq, "DQ": dq, "SQ": sq}


def dice_coefficient(gt, pred=None) -> float:
    """Pixel-level foreground Dice of two label maps; NaN when both are empty."""
    t = _as_table(gt, pred)
    total = t.gt_areas.sum() + t.pred_areas.sum()
    if total == 0:
        return float("nan")
    return float(2.0 * t.foreground_intersection / total)


def compute_nucleus_metrics(gt: np.ndarray, pred: np.ndarray) -> Dict[str, float]:
    """{"AJI", "PQ", "DQ", "SQ", "Dice"} of a ground-truth and a predicted label map."""
    t = instance_contingency(gt, pred)
    out = {"AJI": aggregated_jaccard_index(t)}
    out.update(panoptic_quality(t))
    out["Dice"] = dice_coefficient(t)
    return {k: float(out[k]) for k in NUCLEUS_METRIC_NAMES}


def image_nucleus_metrics(
    gt_annotations: List[Dict],
    rles: Sequence[Dict],
    scores: np.ndarray,
    height: int,
    width: int,
    score_thresh: float = 0.5,
    min_visible: float = 0.0,
) -> Dict[str, float]:
    """
    The metrics of one image from its ground-truth annotations (Detectron2 dataset-dict or COCO)
    and its predicted masks (COCO RLEs with their scores): the predictions scoring at least
    ``score_thresh`` are painted into one label map, higher score on top (``min_visible``: see
    :func:`rles_to_label_map`); adds ``num_gt`` and ``num_pred`` (the instances in the map).
    """
    gt_map = annotations_to_label_map(gt_annotations, height, width)
    scores = np.asarray(scores)
    keep = np.flatnonzero(scores >= score_thresh)
    pred_map = rles_to_label_map([rles[i] for i in keep], height, width, scores[keep], min_visible)
    metrics = compute_nucleus_metrics(gt_map, pred_map)
    metrics["num_gt"] = len(np.unique(gt_map)) - 1
    metrics["num_pred"] = len(np.unique(pred_map)) - 1
    return metrics
