# -*- coding: utf-8 -*-
"""
Two prediction runs of one model on the same images, compared detection by detection: e.g.
``tools/predict.py --device cuda`` against ``--device cpu`` with the same weights
(``bench/gpu_check.py``, ``tests/test_cuda.py``).

The detections of each image are paired one to one by mask IoU (the assignment that maximises the
summed IoU, :func:`scipy.optimize.linear_sum_assignment`); pairs below ``iou_thresh`` stay
unpaired. Devices differ in summation order and, on CUDA, in TF32 convolutions, so equal models give
slightly different logits: a few boundary pixels flip at the 0.5 mask threshold, scores move in the
third decimal, and a detection near the score threshold or an NMS decision may appear in one run
only. The figures returned say how far the runs are apart; the caller decides what it tolerates.
"""
from collections import defaultdict
from typing import Dict, Sequence

import numpy as np

__all__ = ["compare_detections"]


def compare_detections(a: Sequence[Dict], b: Sequence[Dict], iou_thresh: float = 0.5) -> Dict:
    """
    Args:
        a, b: COCO results (``answer.json`` entries: ``image_id``, ``score``, ``segmentation`` RLE).
        iou_thresh: the least mask IoU of a pair.

    Returns:
        ``detections_a``, ``detections_b``, ``images``, ``matched`` (pairs), ``matched_fraction``
        (pairs / the larger run; 1.0 when both are empty), ``mask_iou_median``, ``mask_iou_min``,
        ``mask_iou_ge_0.9`` (fraction of pairs), ``score_diff_max`` and ``score_diff_p95`` (absolute
        score differences of pairs), ``unmatched_score_max`` (the best score of a detection without a
        partner: close to the score threshold when only threshold crossings differ; None if none).
    """
    from scipy.optimize import linear_sum_assignment

    from ..utils.rle import iou

    by_image = defaultdict(lambda: ([], []))
    for r in a:
        by_image[r["image_id"]][0].append(r)
    for r in b:
        by_image[r["image_id"]][1].append(r)
    ious, score_diffs, unmatched = [], [], []
    for ra, rb in by_image.values():
        paired_a, paired_b = set(), set()
        if ra and rb:
            m = np.asarray(iou([r["segmentation"] for r in ra], [r["segmentation"] for r in rb], [0] * len(rb)))
            rows, cols = linear_sum_assignment(-m)
            for i, j in zip(rows, cols):
                if m[i, j] >= iou_thresh:
                    paired_a.add(i)
                    paired_b.add(j)
                    ious.append(float(m[i, j]))
                    score_diffs.append(abs(float(ra[i]["score"]) - float(rb[j]["score"])))
        unmatched += [float(r["score"]) for i, r in enumerate(ra) if i not in paired_a]
        unmatched += [float(r["score"]) for j, r in enumerate(rb) if j not in paired_b]
    larger = max(len(a), len(b))
    ious_np, diffs = np.asarray(ious), np.asarray(score_diffs)
    return {
        "detections_a": len(a),
        "detections_b": len(b),
        "images": len(by_image),
        "matched": len(ious),
        "matched_fraction": len(ious) / larger if larger else 1.0,
        "mask_iou_median": float(np.median(ious_np)) if len(ious) else None,
        "mask_iou_min": float(ious_np.min()) if len(ious) else None,
        "mask_iou_ge_0.9": float((ious_np >= 0.9).mean()) if len(ious) else None,
        "score_diff_max": float(diffs.max()) if len(ious) else None,
        "score_diff_p95": float(np.percentile(diffs, 95)) if len(ious) else None,
        "unmatched_score_max": max(unmatched) if unmatched else None,
    }
