# -*- coding: utf-8 -*-
"""
COCOeval runs and the AP values read from them.

The backend is faster-coco-eval's C++ ``COCOeval_faster`` (same numbers as pycocotools, tested),
imported here directly, so the evaluation is the same whichever Detectron2 build is installed
(one with ``detectron2._C`` would otherwise use its own ``COCOeval_opt``); pycocotools' Python
``COCOeval`` on request.
"""
import contextlib
import copy
import io
from typing import Dict, List

import numpy as np
from faster_coco_eval.core.faster_eval_api import COCOeval_faster
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = ["COCO_METRIC_NAMES", "evaluate_coco", "coco_average_precision", "coco_metric", "counted_detections"]

COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# (IoU threshold or None = mean over 0.50:0.95, area range) of each COCO metric
_COCO_METRIC_DEFS = {
    "AP": (None, "all"),
    "AP50": (0.5, "all"),
    "AP75": (0.75, "all"),
    "APs": (None, "small"),
    "APm": (None, "medium"),
    "APl": (None, "large"),
}


def evaluate_coco(coco_gt: COCO, coco_results: List[Dict], iou_type: str, max_dets, img_ids=None,
                  use_fast_impl: bool = True):
    """
    Run COCOeval (evaluate + accumulate, no summarize) with ``params.maxDets = max_dets``.

    As in Detectron2, segm results lose their "bbox" so that area ranges use the mask area;
    bbox results are evaluated on their boxes. Empty results are fine (AP 0).
    """
    results = copy.deepcopy(coco_results)
    if iou_type == "segm":
        for r in results:
            r.pop("bbox", None)
    else:
        for r in results:
            r.pop("segmentation", None)
    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:
            coco_dt = COCO()
            coco_dt.dataset = {
                "images": coco_gt.dataset["images"],
                "categories": coco_gt.dataset["categories"],
                "annotations": [],
            }
            coco_dt.createIndex()
        coco_eval = (COCOeval_faster if use_fast_impl else COCOeval)(coco_gt, coco_dt, iou_type)
        coco_eval.params.maxDets = sorted({int(m) for m in max_dets})
        if img_ids is not None:
            coco_eval.params.imgIds = list(img_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval


def coco_average_precision(coco_eval, iou_thr=None, area="all", max_dets=100) -> float:
    """
    AP (fraction; -1 entries ignored, NaN if none is valid) from an accumulated COCOeval's
    precision array [IoU, recall, class, area, maxDets]; ``iou_thr=None`` averages 0.50:0.95.
    """
    p = coco_eval.params
    s = coco_eval.eval["precision"]
    if iou_thr is not None:
        s = s[np.flatnonzero(np.isclose(np.asarray(p.iouThrs), iou_thr))]
    s = s[:, :, :, list(p.areaRngLbl).index(area), list(p.maxDets).index(max_dets)]
    valid = s[s > -1]
    return float(valid.mean()) if valid.size else float("nan")


def coco_metric(coco_eval, name: str, max_dets: int) -> float:
    """One of :data:`COCO_METRIC_NAMES` as a percentage (Detectron2's convention)."""
    iou_thr, area = _COCO_METRIC_DEFS[name]
    return coco_average_precision(coco_eval, iou_thr, area, max_dets) * 100


def counted_detections(coco_gt: COCO, coco_results: List[Dict], max_dets: int = 100, iou_thr: float = 0.5) -> Dict:
    """
    The detections AP@``iou_thr`` with ``max_dets`` per image counts (the challenge metric: the
    top-scoring ``max_dets`` of each image), which of them are false positives by COCOeval's own
    matching, and what ranking them could reach.

    AP is the mean of the interpolated precision at the 101 recall points 0, 0.01, ..., 1; with
    ``max_dets`` an image, the recall cannot pass (true positives counted) / (ground-truth objects),
    so the AP of these detections is at most ``(1 + floor(100 x that recall)) / 101``, reached when
    every false positive ranks below every true positive.

    Returns:
        dict with ``images`` (per image: ``image_id``, ``num_gt``, ``num_counted``,
        ``false_positive_ranks`` = 0-based ranks by score among the counted), ``counted`` and
        ``false_positives`` (indices into ``coco_results``), ``num_gt``, ``ap`` (as evaluated),
        ``ap_false_positives_last`` (the counted detections, every false positive ranked last),
        ``ap_bound`` and ``ap_ceiling`` (all counted true positives); APs as fractions.
    """
    coco_eval = evaluate_coco(coco_gt, coco_results, "segm" if coco_results and "segmentation" in coco_results[0]
                              else "bbox", [max_dets], use_fast_impl=False)
    iou_type = coco_eval.params.iouType
    t = int(np.flatnonzero(np.isclose(coco_eval.params.iouThrs, iou_thr))[0])
    images, counted, false_pos = [], [], []
    for e in coco_eval.evalImgs:
        if e is None or list(e["aRng"]) != list(coco_eval.params.areaRng[0]):
            continue
        matched = e["dtMatches"][t] > 0
        # loadRes numbers the results 1..N in their order: id - 1 indexes coco_results
        counted += [d - 1 for d in e["dtIds"]]
        false_pos += [d - 1 for d, m in zip(e["dtIds"], matched) if not m]
        images.append({"image_id": e["image_id"], "num_gt": len(e["gtIds"]), "num_counted": len(e["dtIds"]),
                       "false_positive_ranks": [k for k, m in enumerate(matched) if not m]})
    fp = set(false_pos)
    reranked = [dict(coco_results[i], score=coco_results[i]["score"] + (0.0 if i in fp else 2.0)) for i in counted]
    num_gt = len(coco_gt.getAnnIds())

    def bound(num_true):
        return (1 + np.floor(100 * num_true / num_gt + 1e-9)) / 101 if num_gt else float("nan")

    return {
        "images": images,
        "counted": counted,
        "false_positives": false_pos,
        "num_gt": num_gt,
        "ap": coco_average_precision(coco_eval, iou_thr, "all", max_dets),
        "ap_false_positives_last": coco_average_precision(
            evaluate_coco(coco_gt, reranked, iou_type, [max_dets]), iou_thr, "all", max_dets),
        "ap_bound": float(bound(len(counted) - len(false_pos))),
        "ap_ceiling": float(bound(len(counted))),
    }
