# -*- coding: utf-8 -*-
"""
Instances -> COCO results: the one converter of d2_nucleus. What :class:`NucleusEvaluator` scores
(``coco_instances_results.json``) and what ``tools/predict.py`` submits (answer.json) are made
here, by the same code.

A result is ``{"image_id", "category_id", "segmentation": {"size": [h, w], "counts": str},
"score", "bbox": [x, y, w, h]}``, as ``pycocotools.coco.COCO.loadRes`` reads it; the results of
one image are sorted by decreasing score (ties keep their order, so COCOeval, which sorts
stably, matches them as it would unsorted).
"""
from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch

from detectron2.structures import BoxMode, Instances

from ..utils import rle as rle_util

__all__ = ["instance_rles", "instances_to_coco_json"]


def instance_rles(instances: Instances, height: Optional[int] = None, width: Optional[int] = None):
    """
    Compressed RLEs (``{"size": [h, w], "counts": str}``) of the instances' masks, in instance
    order, or None without masks.

    Takes ``pred_rles`` (NucleusRCNN's per-instance RLEs) or full-size ``pred_masks`` (plain
    Detectron2: N x H x W or N x 1 x H x W, bool, or probabilities binarised at 0.5).

    Args:
        height, width: the image size every mask must have (default: ``instances.image_size``).

    Raises:
        ValueError: a mask of another size (e.g. box-local masks not pasted into the image).
    """
    if height is None or width is None:
        height, width = instances.image_size
    height, width = int(height), int(width)
    if instances.has("pred_rles"):
        rles = []
        for r in instances.pred_rles:
            counts = r["counts"]
            rles.append({"size": [int(s) for s in r["size"]],
                         "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts})
    elif instances.has("pred_masks"):
        masks = instances.pred_masks
        if masks.dim() == 4:
            masks = masks[:, 0]
        if len(masks) and tuple(masks.shape[-2:]) != (height, width):
            raise ValueError(
                f"pred_masks are {tuple(masks.shape[-2:])}, the image is {(height, width)}: "
                "the masks must be pasted into the image (detector_postprocess)"
            )
        if masks.dtype != torch.bool:
            masks = masks >= 0.5
        rles = []
        for m in masks.cpu().numpy():
            r = rle_util.encode(m)
            r["counts"] = r["counts"].decode("ascii")
            rles.append(r)
    else:
        return None
    for r in rles:
        if r["size"] != [height, width]:
            raise ValueError(f"a predicted mask is {r['size']}, the image is {[height, width]}")
    return rles


def instances_to_coco_json(
    instances: Instances,
    img_id: int,
    category_ids: Optional[Union[Sequence[int], Mapping[int, int]]] = None,
    rles: Optional[List[Dict]] = None,
) -> List[Dict]:
    """
    COCO results of one image, sorted by decreasing score (ties keep their order).

    A drop-in for ``detectron2.evaluation.coco_evaluation.instances_to_coco_json`` that takes
    the per-instance RLEs of :func:`d2_nucleus.modeling.nucleus_postprocess` (``pred_rles``);
    full-size ``pred_masks`` are accepted too (:func:`instance_rles`).

    Args:
        instances: results on CPU with ``pred_boxes`` (XYXY), ``scores``, ``pred_classes`` and
            optionally ``pred_rles`` or ``pred_masks``.
        img_id: the image's id.
        category_ids: dataset category id of each contiguous class index (``category_ids[c]``);
            None keeps the class index, as Detectron2 does (its evaluator maps ids later).
        rles: the masks as :func:`instance_rles` returns them, if the caller already has them.
    """
    n = len(instances)
    if n == 0:
        return []
    if rles is None:
        rles = instance_rles(instances)
    boxes = BoxMode.convert(
        instances.pred_boxes.tensor.numpy(), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS
    ).tolist()
    scores = instances.scores.tolist()
    classes = instances.pred_classes.tolist()
    if category_ids is not None:
        classes = [int(category_ids[c]) for c in classes]
    results = []
    for k in sorted(range(n), key=lambda i: -scores[i]):
        result = {"image_id": img_id, "category_id": classes[k]}
        if rles is not None:
            result["segmentation"] = rles[k]
        result["score"] = scores[k]
        result["bbox"] = boxes[k]
        results.append(result)
    return results
