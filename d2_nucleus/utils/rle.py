# -*- coding: utf-8 -*-
"""
COCO run-length encodings: the one module through which d2_nucleus calls ``pycocotools.mask``,
and the one owner of the two RLE conversions pycocotools has no cheap form of:
:func:`rle_pixels` (runs -> the mask's own pixels, without an H x W array) and
:func:`encode_box_masks` (masks given on their boxes -> RLEs of the whole image, without an
H x W array).

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
    "rle_pixels",
    "encode_box_masks",
    "encode_box_masks_batched",
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


def rle_pixels(rle: RLE) -> np.ndarray:
    """
    Column-major pixel indices (``x * height + y``) of the foreground of a COCO RLE, in
    increasing order: O(mask area), where ``decode`` is O(H * W) (bench/bench_evaluation.py;
    BENCHMARKS.md "Evaluation").

    Raises:
        ValueError: the run lengths do not sum to height x width.
    """
    height, width = (int(s) for s in rle["size"])
    counts = rle_counts(rle)
    if counts.sum() != height * width:
        raise ValueError(f"run lengths sum to {counts.sum()}, not {height * width} pixels")
    lengths = counts[1::2]
    starts = np.cumsum(counts)[0::2][: len(lengths)]  # foreground runs start where background runs end
    keep = lengths > 0
    lengths, starts = lengths[keep], starts[keep]
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(total)


def _box_mask_boundaries(binary: np.ndarray, origins: np.ndarray, img_h: int):
    """
    Run boundaries of k box-local binary masks in their images' column-major (Fortran) order.

    Args:
        binary: (k, h, w) bool, each mask on its box (False beyond it).
        origins: (k, 2) int (x0, y0) of each box's top-left pixel in the image.

    Returns:
        instance index (int64) and position of every boundary (start of a run of ones, then
        its end), ordered by instance and position; runs that continue from the bottom of one
        column to the top of the next are joined.
    """
    k, h, w = binary.shape
    # Column-major, with a False row before and after each column so runs never span columns.
    cols = np.zeros((k, w, h + 2), np.int8)
    cols[:, :, 1:-1] = binary.transpose(0, 2, 1)
    inst, col, row = np.nonzero(np.diff(cols, axis=2))  # row = local row of a start / end
    pos = (origins[inst, 0] + col) * img_h + origins[inst, 1] + row
    # Boundaries alternate start, end within each instance; an end equal to the next start of
    # the same instance (a full-height column followed by one starting at row 0) is no boundary.
    if len(pos) > 2:
        is_end = np.zeros(len(pos), bool)
        is_end[1::2] = True
        join = np.zeros(len(pos), bool)
        joined = is_end[:-1] & (pos[:-1] == pos[1:]) & (inst[:-1] == inst[1:])
        join[:-1] |= joined
        join[1:] |= joined
        if join.any():
            inst, pos = inst[~join], pos[~join]
    return inst, pos


def _boundaries_to_rles(inst: np.ndarray, pos: np.ndarray, n: int, img_h: int, img_w: int) -> List[RLE]:
    """Compressed RLEs (str counts) of n masks from their run boundaries (sorted by instance)."""
    # Uncompressed counts (zeros, ones, zeros, ...) of instance i are the differences of
    # [0, its boundaries..., H * W]; build all of them with one np.diff.
    num = np.bincount(inst, minlength=n)
    ends = np.cumsum(num)
    first = ends - num + 2 * np.arange(n)  # where each instance's leading 0 goes
    last = ends + 2 * np.arange(n) + 1  # and its trailing H * W
    ext = np.empty(len(pos) + 2 * n, np.int64)
    is_pos = np.ones(len(ext), bool)
    is_pos[first] = is_pos[last] = False
    ext[first], ext[last], ext[is_pos] = 0, img_h * img_w, pos
    counts = np.diff(ext)
    # No empty run at the end when a mask reaches the last pixel (pycocotools' canonical form).
    last = last - ((counts[last - 1] == 0) & (last - 1 > first))
    uncompressed = [
        {"size": [img_h, img_w], "counts": counts[a:b]} for a, b in zip(first.tolist(), last.tolist())
    ]
    rles = fr_py_objects(uncompressed, img_h, img_w)
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def encode_box_masks(masks: np.ndarray, origins, image_shape) -> List[RLE]:
    """
    Compressed COCO RLEs (``{"size": [h, w], "counts": str}``) of k masks given on their boxes,
    identical to ``encode`` of the full masks but O(sum of box areas): only the runs of each
    box's columns are found (vectorised over all k), and the all-zero columns around them are
    implied.

    Args:
        masks: (k, h, w) binary masks, each on its box (a common, padded size; nonzero = in).
        origins: (k, 2) (x0, y0): where each box's top-left pixel lies in the image. Every mask
            must lie within the image.
        image_shape: (height, width) of the image.
    """
    masks = np.asarray(masks)
    origins = np.asarray(origins).reshape(-1, 2)
    if masks.ndim != 3 or len(masks) != len(origins):
        raise ValueError(f"need k x h x w masks for k origins, got {masks.shape} for {len(origins)}")
    if len(masks) == 1:  # one mask (data preparation, a mask a call): faster this way (BENCHMARKS.md)
        return [_encode_one_box_mask(masks[0], int(origins[0, 0]), int(origins[0, 1]), image_shape)]
    return encode_box_masks_batched([(np.arange(len(masks)), masks, origins)], len(masks), image_shape)


def _encode_one_box_mask(mask: np.ndarray, x0: int, y0: int, image_shape) -> RLE:
    """
    :func:`encode_box_masks` of one mask: the runs of the box's columns taken at full height
    (a w x H strip, column-major as COCO counts), plus the all-zero columns around them. For a
    single mask this is ~17 us against ~43 us for the batched boundary search (real dataset's
    masks, measured when this was written).
    """
    H, W = int(image_shape[0]), int(image_shape[1])
    h, w = mask.shape
    if h == 0 or w == 0:
        return {"size": [H, W], "counts": fr_py_objects({"size": [H, W], "counts": [H * W]}, H, W)["counts"].decode("ascii")}
    strip = np.zeros((w, H), np.uint8)  # columns x0..x0+w-1, each of full height, as rows
    strip[:, y0 : y0 + h] = mask.T if mask.dtype == bool else mask.T != 0
    flat = strip.ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], change, [flat.size]))).tolist()
    if flat[0]:
        runs.insert(0, 0)  # COCO counts start with a (possibly empty) run of zeros
    runs[0] += x0 * H
    after = (W - x0 - w) * H
    if flat[-1]:
        if after:
            runs.append(after)
    else:
        runs[-1] += after
    rle = fr_py_objects({"size": [H, W], "counts": runs}, H, W)
    return {"size": [H, W], "counts": rle["counts"].decode("ascii")}


def encode_box_masks_batched(parts, n: int, image_shape) -> List[RLE]:
    """
    :func:`encode_box_masks` of n masks given in parts (e.g. groups of similar box size):
    ``parts`` yields (indices into 0..n-1, (k, h, w) masks, (k, 2) origins); one RLE conversion
    for all of them.
    """
    img_h, img_w = int(image_shape[0]), int(image_shape[1])
    if n == 0:
        return []
    inst_parts, pos_parts = [], []
    for idx, masks, origins in parts:
        inst, pos = _box_mask_boundaries(np.asarray(masks, dtype=bool), np.asarray(origins, np.int64), img_h)
        inst_parts.append(np.asarray(idx)[inst])
        pos_parts.append(pos)
    inst = np.concatenate(inst_parts)
    pos = np.concatenate(pos_parts)
    del inst_parts, pos_parts
    order = np.argsort(inst, kind="stable")  # by instance; positions stay sorted within one
    inst, pos = inst[order], pos[order]  # rebound: the unsorted copies are freed before the RLEs are built
    del order
    return _boundaries_to_rles(inst, pos, n, img_h, img_w)


def to_box_mask(rle: RLE) -> Optional[Tuple[np.ndarray, int, int]]:
    """
    Decode a COCO RLE into its bounding-box crop only (O(mask area), not O(H * W)).

    Returns:
        (mask, x0, y0): a uint8 {0, 1} mask of the tight bounding box whose top-left pixel is
        (x0, y0) in the image; None for an empty mask.
    """
    p = rle_pixels(rle)  # column-major pixel indices
    if p.size == 0:
        return None
    height = int(rle["size"][0])
    xs, ys = p // height, p % height
    x0, y0 = int(xs.min()), int(ys.min())
    mask = np.zeros((int(ys.max()) - y0 + 1, int(xs.max()) - x0 + 1), np.uint8)
    mask[ys - y0, xs - x0] = 1
    return mask, x0, y0
