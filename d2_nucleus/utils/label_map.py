# -*- coding: utf-8 -*-
"""
Instance label maps (H x W int32: 0 background, 1..N one label per instance) from COCO RLEs
and from Detectron2 dataset annotations.

Memory is O(H*W) whatever the number of instances: masks are painted one at a time, straight
from their run-length encoding, so N x H x W masks never exist. pycocotools can only decode an
RLE into a full H x W array (about 0.5 ms per mask at 1000 x 1000, 1.5 s for 3000 detections);
painting the runs of the compressed RLE directly touches only the mask's own pixels.
"""
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import pycocotools.mask as mask_util

__all__ = ["rles_to_label_map", "annotations_to_label_map", "rle_counts", "to_compressed_rle"]


def _decode_counts_string(counts: bytes) -> np.ndarray:
    """
    Run lengths of a compressed COCO RLE string (the LEB128-like format of pycocotools'
    ``rleToString``), vectorised: 5 bits a character, 0x20 = "more characters follow",
    0x10 in the last character = negative, and from the 3rd run on each run is stored as a
    difference to the run two places before.
    """
    c = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, dtype=np.int64)
    if c.min() < 0 or c.max() > 63:
        raise ValueError("not a compressed COCO RLE string")
    last = (c & 0x20) == 0  # last character of each number
    if not last[-1]:
        raise ValueError("truncated compressed COCO RLE string")
    ends = np.flatnonzero(last)
    starts = np.concatenate([[0], ends[:-1] + 1])
    pos = np.arange(c.size) - np.repeat(starts, ends - starts + 1)  # character index in number
    x = np.add.reduceat((c & 0x1F) << (5 * pos), starts)
    negative = (c[ends] & 0x10) != 0
    x[negative] -= np.left_shift(1, 5 * (ends[negative] - starts[negative] + 1))
    # undo the delta coding: cnts[m] = x[m] + cnts[m - 2] for m > 2
    if x.size > 3:
        x[3::2] = np.cumsum(x[1::2])[1:]
        x[4::2] = np.cumsum(x[2::2])[1:]
    if (x < 0).any():
        raise ValueError("corrupt compressed COCO RLE string (negative run length)")
    return x


def rle_counts(rle: Dict) -> np.ndarray:
    """
    The run lengths (alternating background / foreground, column-major, starting with
    background) of a COCO RLE dict whose "counts" is a compressed string (str or bytes) or an
    uncompressed list of ints.
    """
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    if isinstance(counts, (bytes, bytearray)):
        return _decode_counts_string(bytes(counts))
    return np.asarray(counts, dtype=np.int64)


def to_compressed_rle(segmentation, height: int, width: int) -> Dict:
    """
    A compressed RLE dict for a COCO/Detectron2 segmentation: compressed RLE (returned as is),
    uncompressed RLE (list counts) or polygons (list of flat [x0, y0, x1, y1, ...] lists).
    """
    if isinstance(segmentation, dict):
        if "counts" not in segmentation or "size" not in segmentation:
            raise ValueError("RLE segmentation needs 'size' and 'counts'")
        if isinstance(segmentation["counts"], list):
            return mask_util.frPyObjects(segmentation, *segmentation["size"])
        return segmentation
    if isinstance(segmentation, list):
        polygons = [np.asarray(p, dtype=np.float64).ravel().tolist() for p in segmentation]
        polygons = [p for p in polygons if len(p) >= 6]
        if not polygons:
            return mask_util.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
        return mask_util.merge(mask_util.frPyObjects(polygons, height, width))
    raise TypeError(f"unknown segmentation type {type(segmentation).__name__}")


def rles_to_label_map(
    rles: Sequence[Dict], height: int, width: int, scores: Optional[Sequence[float]] = None
) -> np.ndarray:
    """
    Paint instance masks into one label map.

    Args:
        rles: COCO RLE dicts ``{"size": [height, width], "counts": str | bytes | list[int]}``.
        height, width: size of the label map; every RLE must have this size.
        scores: optional score of each RLE. Where masks overlap, the pixel goes to the
            higher-scoring instance (ties: the earlier one). Without scores, the earlier
            instance in ``rles`` wins.

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
    num_pixels = height * width
    for i in order:
        rle = rles[i]
        size = [int(s) for s in rle["size"]]
        if size != [height, width]:
            raise ValueError(f"RLE {i} has size {size}, the label map is {[height, width]}")
        counts = rle_counts(rle)
        if counts.sum() != num_pixels:
            raise ValueError(f"RLE {i}: run lengths sum to {counts.sum()}, not {num_pixels} pixels")
        ends = np.cumsum(counts)
        lengths = counts[1::2]
        starts = ends[0::2][: len(lengths)]  # foreground runs start where background runs end
        keep = lengths > 0
        lengths, starts = lengths[keep], starts[keep]
        total = int(lengths.sum())
        if total == 0:
            continue
        # column-major pixel index of every foreground pixel
        offsets = np.cumsum(lengths) - lengths
        p = np.repeat(starts - offsets, lengths) + np.arange(total)
        idx = (p % height) * width + p // height
        free = idx[flat[idx] == 0]
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
