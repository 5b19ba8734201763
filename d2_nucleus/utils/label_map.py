# -*- coding: utf-8 -*-
"""
Instance label maps (H x W int32: 0 background, 1..N one label per instance) from COCO RLEs
and from Detectron2 dataset annotations.

Memory is O(H*W) whatever the number of instances: masks are painted one at a time, straight
from their run-length encoding, so N x H x W masks never exist. pycocotools can only decode an
RLE into a full H x W array (BENCHMARKS.md "Evaluation": 12x slower for 2,000 detections);
painting the runs of the compressed RLE directly touches only the mask's own pixels.
"""
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from .rle import rle_pixels, to_compressed_rle

__all__ = ["rles_to_label_map", "annotations_to_label_map"]


def rles_to_label_map(
    rles: Sequence[Dict], height: int, width: int, scores: Optional[Sequence[float]] = None,
    min_visible: float = 0.0,
) -> np.ndarray:
    """
    Paint instance masks into one label map.

    Args:
        rles: COCO RLE dicts ``{"size": [height, width], "counts": str | bytes | list[int]}``.
        height, width: size of the label map; every RLE must have this size.
        scores: optional score of each RLE. Where masks overlap, the pixel goes to the
            higher-scoring instance (ties: the earlier one). Without scores, the earlier
            instance in ``rles`` wins.
        min_visible: an instance of which less than this fraction of its pixels is still free
            when its turn comes (the rest is taken by instances painted before it) is not
            painted at all, instead of leaving a fragment (0: every instance keeps its free pixels).

    Returns:
        np.ndarray: (height, width) int32; 0 is background and label ``k`` (1-based) is
        ``rles[k - 1]``, whatever the scores. An instance entirely covered by higher-priority
        instances has no pixel, so its label is absent from the map.
    """
    height, width = int(height), int(width)
    n = len(rles)
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(scores) != n:
            raise ValueError(f"{n} RLEs but {len(scores)} scores")
        order = np.argsort(-scores, kind="stable")
    else:
        order = np.arange(n)
    label_map = np.zeros((height, width), dtype=np.int32)
    flat = label_map.reshape(-1)  # a view: C order, index row * width + col
    for i in order:
        rle = rles[i]
        size = [int(s) for s in rle["size"]]
        if size != [height, width]:
            raise ValueError(f"RLE {i} has size {size}, the label map is {[height, width]}")
        try:
            p = rle_pixels(rle)  # column-major pixel indices of the mask
        except ValueError as e:
            raise ValueError(f"RLE {i}: {e}") from None
        if p.size == 0:
            continue
        idx = (p % height) * width + p // height
        free = idx[flat[idx] == 0]
        if min_visible > 0 and free.size < min_visible * idx.size:
            continue
        flat[free] = i + 1
    return label_map


def annotations_to_label_map(annotations: List[Dict], height: int, width: int) -> np.ndarray:
    """
    Label map of Detectron2 dataset-dict (or COCO) annotations: label ``k`` is
    ``annotations[k - 1]``, the earlier annotation wins where masks overlap. ``segmentation``
    may be a compressed or uncompressed RLE dict or polygons. Crowd annotations
    (``iscrowd=1``) are skipped; their labels stay unused.

    Raises:
        ValueError: an annotation has no "segmentation", or an RLE of another size.
    """
    rles: List[Union[Dict, None]] = []
    for i, ann in enumerate(annotations):
        if "segmentation" not in ann:
            raise ValueError(f"annotation {i} has no 'segmentation'")
        if ann.get("iscrowd", 0):
            rles.append(None)
            continue
        rles.append(to_compressed_rle(ann["segmentation"], height, width))
    empty = {"size": [int(height), int(width)], "counts": [int(height) * int(width)]}
    return rles_to_label_map([r if r is not None else empty for r in rles], height, width)
