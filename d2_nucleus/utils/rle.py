# -*- coding: utf-8 -*-
"""
COCO run-length encodings: the one module through which d2_nucleus calls ``pycocotools.mask``.

Every function here takes what its pycocotools namesake takes and returns the same, but is safe
for any number of objects under numpy 2. pycocotools 2.0.11's ``area()`` builds a throw-away
``np.array((n,), dtype=np.uint8)`` and so raises ``OverflowError: Python integer 294 out of
bounds for uint8`` for a list of more than 255 RLEs under numpy 2 (every real image here has
294-1,862 nuclei). ``encode``, ``decode``, ``toBbox``, ``iou``, ``merge`` and ``frPyObjects``
were checked with 300+ objects (``tests/test_rle.py``) and are passed through; ``area`` is
called in chunks of at most 255.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pycocotools.mask as _mask

__all__ = [
    "area",
    "to_bbox",
    "encode",
    "decode",
    "merge",
    "iou",
    "fr_py_objects",
    "rle_counts",
    "to_compressed_rle",
    "to_box_mask",
]

# pycocotools' area() allocates a uint8 array holding the list's length.
_AREA_CHUNK = 255

RLE = Dict  # {"size": [h, w], "counts": bytes | str | list[int]}


def area(rles: Union[RLE, Sequence[RLE]]) -> Union[np.uint32, np.ndarray]:
    """Pixel count of one RLE (a scalar) or of each RLE of a list (uint32 array)."""
    if isinstance(rles, dict):
        return _mask.area(rles)
    rles = list(rles)
    if not rles:
        return np.zeros(0, dtype=np.uint32)
    return np.concatenate(
        [np.asarray(_mask.area(rles[i : i + _AREA_CHUNK]), dtype=np.uint32) for i in range(0, len(rles), _AREA_CHUNK)]
    )


def to_bbox(rles: Union[RLE, Sequence[RLE]]) -> np.ndarray:
    """XYWH box of one RLE (shape (4,)) or of each RLE of a list (shape (N, 4), float64)."""
    if isinstance(rles, dict):
        return _mask.toBbox(rles)
    rles = list(rles)
    if not rles:
        return np.zeros((0, 4), dtype=np.float64)
    return _mask.toBbox(rles)


def encode(masks: np.ndarray) -> Union[RLE, List[RLE]]:
    """RLE of a (H, W) mask, or the list of RLEs of a (H, W, N) stack (any dtype; nonzero = in)."""
    masks = np.asfortranarray(masks, dtype=np.uint8)
    return _mask.encode(masks)


def decode(rles: Union[RLE, Sequence[RLE]]) -> np.ndarray:
    """(H, W) uint8 mask of one RLE, or (H, W, N) of a list."""
    return _mask.decode(rles if isinstance(rles, dict) else list(rles))


def merge(rles: Sequence[RLE], intersect: bool = False) -> RLE:
    """Union (or intersection) of RLEs of one size."""
    return _mask.merge(list(rles), int(bool(intersect)))


def iou(dt: Sequence, gt: Sequence, iscrowd: Sequence) -> np.ndarray:
    """(len(dt), len(gt)) IoU of RLEs or of XYWH boxes, as pycocotools' ``iou``."""
    return _mask.iou(dt, gt, [int(bool(c)) for c in iscrowd])


def fr_py_objects(objs, height: int, width: int):
    """pycocotools' ``frPyObjects``: polygons, XYWH boxes or uncompressed RLEs -> compressed RLEs."""
    return _mask.frPyObjects(objs, int(height), int(width))


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


def rle_counts(rle: RLE) -> np.ndarray:
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


def to_compressed_rle(segmentation, height: int, width: int) -> RLE:
    """
    A compressed RLE dict for a COCO/Detectron2 segmentation: compressed RLE (returned as is),
    uncompressed RLE (list counts) or polygons (list of flat [x0, y0, x1, y1, ...] lists).
    """
    if isinstance(segmentation, dict):
        if "counts" not in segmentation or "size" not in segmentation:
            raise ValueError("RLE segmentation needs 'size' and 'counts'")
        if isinstance(segmentation["counts"], list):
            return fr_py_objects(segmentation, *segmentation["size"])
        return segmentation
    if isinstance(segmentation, list):
        polygons = [np.asarray(p, dtype=np.float64).ravel().tolist() for p in segmentation]
        polygons = [p for p in polygons if len(p) >= 6]
        if not polygons:
            return encode(np.zeros((height, width), dtype=np.uint8))
        return merge(fr_py_objects(polygons, height, width))
    raise TypeError(f"unknown segmentation type {type(segmentation).__name__}")


def to_box_mask(rle: RLE) -> Optional[Tuple[np.ndarray, int, int]]:
    """
    Decode a COCO RLE into its bounding-box crop only (O(mask area), not O(H * W)).

    Returns:
        (mask, x0, y0): a uint8 {0, 1} mask of the tight bounding box whose top-left pixel is
        (x0, y0) in the image; None for an empty mask.
    """
    height = int(rle["size"][0])
    counts = rle_counts(rle)
    starts = np.cumsum(counts)[0::2][: len(counts) // 2]  # foreground runs start here
    lengths = counts[1::2]
    keep = lengths > 0
    starts, lengths = starts[keep], lengths[keep]
    total = int(lengths.sum())
    if total == 0:
        return None
    offsets = np.cumsum(lengths) - lengths
    p = np.repeat(starts - offsets, lengths) + np.arange(total)  # column-major pixel indices
    xs, ys = p // height, p % height
    x0, y0 = int(xs.min()), int(ys.min())
    mask = np.zeros((int(ys.max()) - y0 + 1, int(xs.max()) - x0 + 1), np.uint8)
    mask[ys - y0, xs - x0] = 1
    return mask, x0, y0
