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

__all__ = ["COCO_METRIC_NAMES", "evaluate_coco", "coco_average_precision", "coco_metric"]

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
