# -*- coding: utf-8 -*-
"""
COCO results (the challenge's answer.json) from NucleusRCNN outputs.

answer.json is a list of ``{"image_id", "category_id", "segmentation": {"size": [h, w],
"counts": str}, "score", "bbox": [x, y, w, h]}``, sorted by score within each image, as
``pycocotools.coco.COCO.loadRes`` reads it; answer.zip holds it as ``answer.json`` at the top level.
"""
import io
import json
import zipfile
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from detectron2.structures import BoxMode, Instances

from ..utils import rle as rle_util
from ..utils.file_io import atomic_write, check_writable

__all__ = ["instances_to_coco_json", "write_answer", "ANSWER_NAME"]

# The file name the challenge expects inside answer.zip.
ANSWER_NAME = "answer.json"


def instances_to_coco_json(
    instances: Instances,
    img_id: int,
    category_ids: Optional[Union[Sequence[int], Mapping[int, int]]] = None,
) -> List[Dict]:
    """
    COCO results of one image, sorted by decreasing score (ties keep their order).

    A drop-in for ``detectron2.evaluation.coco_evaluation.instances_to_coco_json`` that takes
    the per-instance RLEs of :func:`d2_nucleus.modeling.nucleus_postprocess` (``pred_rles``);
    full-size ``pred_masks`` are still accepted (encoded one at a time).

    Args:
        instances: results on CPU with ``pred_boxes`` (XYXY), ``scores``, ``pred_classes`` and
            optionally ``pred_rles`` or ``pred_masks``.
        img_id: the image's id.
        category_ids: dataset category id of each contiguous class index (``category_ids[c]``);
            None keeps the class index, as Detectron2 does (its evaluator maps ids later).
    """
    n = len(instances)
    if n == 0:
        return []
    boxes = BoxMode.convert(
        instances.pred_boxes.tensor.numpy(), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS
    ).tolist()
    scores = instances.scores.tolist()
    classes = instances.pred_classes.tolist()
    if category_ids is not None:
        classes = [int(category_ids[c]) for c in classes]
    if instances.has("pred_rles"):
        rles = list(instances.pred_rles)
    elif instances.has("pred_masks"):
        rles = []
        for mask in instances.pred_masks:
            rle = rle_util.encode(np.asarray(mask))
            rle["counts"] = rle["counts"].decode("utf-8")
            rles.append(rle)
    else:
        rles = None
    results = []
    for k in sorted(range(n), key=lambda i: -scores[i]):
        result = {"image_id": img_id, "category_id": classes[k]}
        if rles is not None:
            counts = rles[k]["counts"]
            result["segmentation"] = {
                "size": [int(s) for s in rles[k]["size"]],
                "counts": counts.decode("utf-8") if isinstance(counts, bytes) else counts,
            }
        result["score"] = scores[k]
        result["bbox"] = boxes[k]
        results.append(result)
    return results


def write_answer(
    results: List[Dict], path: str, zip_path: Optional[str] = None, overwrite: bool = False
) -> None:
    """
    Write COCO results to ``path`` (JSON) and, if ``zip_path`` is given, also a zip archive that
    holds them as ``answer.json`` at its top level. Both writes are atomic.

    Raises:
        OutputExistsError: a target exists and ``overwrite`` is False (checked before writing).
    """
    data = json.dumps(results, separators=(",", ":")).encode("utf-8")
    targets = [path] + ([zip_path] if zip_path else [])
    for target in targets:
        check_writable(target, overwrite=overwrite)
    with atomic_write(path, overwrite=overwrite) as f:
        f.write(data)
    if zip_path:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(ANSWER_NAME, data)
        with atomic_write(zip_path, overwrite=overwrite) as f:
            f.write(buffer.getvalue())
