# -*- coding: utf-8 -*-
"""
Resolution of imported annotations: the source's microns per pixel (mpp), the factor to the
model's, and the one resampler of images, instance masks and outlines to the target grid.

* ``factor = source_mpp / target_mpp``: a 40x source (0.25 um/px) imported at 0.5 um/px is halved
  (0.5), a 20x source (0.5 um/px) for the 0.25 um/px model is doubled (2). A source within a
  tolerance of the target keeps its pixels (factor 1): the rule of ``config.input_resize_factor``
  (prediction) and of the slide pipeline's level choice, whose tolerance is the config's
  ``SLIDE.MPP_TOLERANCE`` (tools/import_annotations.py passes it; this module reads no config).
* The target image is ``round(W * factor) x round(H * factor)`` px; target pixel (u, v) covers
  the source square [u / sx, (u + 1) / sx) x [v / sy, (v + 1) / sy), with ``sx``, ``sy`` the exact
  per-axis ratios of the sizes (so images, masks and outlines share one grid).
* Images: area averaging when shrinking, bilinear when enlarging (OpenCV ``INTER_AREA`` /
  ``INTER_LINEAR``).
* Outlines (polygon formats): the vertices are scaled by (sx, sy) and rasterised at the target
  resolution (:mod:`.rasterize`): no resampling of pixels at all.
* Instance masks (label images, RLE), made disjoint first by :mod:`.rasterize`'s overlap rule:
  the share of every target pixel's footprint each instance covers is computed exactly (separable
  box integration); the pixel is foreground when the shares add up to more than half (exactly
  half: every other pixel, so areas scale by ``sx * sy`` without bias) and belongs to the
  instance with the largest share, so instances stay distinct and touching ones leave no gap.
"""
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .rasterize import Crop, instance_crops

__all__ = [
    "MIN_MPP",
    "MAX_MPP",
    "check_mpp",
    "scale_factor",
    "target_size",
    "resample_image",
    "resample_crops",
    "scale_geometry",
]

#: Plausible microscope resolutions (um/px); a TIFF's 72 dpi default (352.8 um/px) is not one.
MIN_MPP, MAX_MPP = 0.05, 20.0


def check_mpp(value, what: str) -> float:
    """``value`` as a float within [MIN_MPP, MAX_MPP], else ValueError("<what> ...")."""
    try:
        mpp = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} is not a number: {value!r}") from None
    if not (math.isfinite(mpp) and MIN_MPP <= mpp <= MAX_MPP):
        raise ValueError(f"{what} is {mpp:g} um/px, outside the plausible {MIN_MPP:g}-{MAX_MPP:g}")
    return mpp


def scale_factor(source_mpp: float, target_mpp: float, tolerance: float = 0.0) -> float:
    """Source pixels -> target pixels: ``source_mpp / target_mpp``, or 1 within ``tolerance``."""
    factor = float(source_mpp) / float(target_mpp)
    return 1.0 if abs(factor - 1.0) <= tolerance else factor


def target_size(height: int, width: int, factor: float) -> Tuple[int, int]:
    """(height, width) of the resampled image: ``round(size * factor)``, at least 1."""
    if factor == 1.0:
        return int(height), int(width)
    return max(1, int(round(height * factor))), max(1, int(round(width * factor)))


def resample_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` (H, W[, C]) resized to (height, width): area averaging down, bilinear up."""
    import cv2

    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    shrink = height * width < h * w
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _coverage(n_src: int, n_dst: int, start: int, length: int) -> Tuple[int, np.ndarray]:
    """
    Along one axis: the target pixels touched by source pixels [start, start + length), and the
    fraction of each target pixel's footprint that each of those source pixels covers.

    Returns:
        (first target pixel, (n_target, length) matrix)
    """
    scale = n_dst / n_src  # target pixels per source pixel
    t0 = math.floor(start * scale)
    t1 = min(math.ceil((start + length) * scale), n_dst)
    t = np.arange(t0, t1, dtype=np.float64)
    lo, hi = t / scale, (t + 1) / scale  # footprint of each target pixel, in source units
    s = np.arange(start, start + length, dtype=np.float64)
    overlap = np.clip(np.minimum(hi[:, None], s[None, :] + 1) - np.maximum(lo[:, None], s[None, :]), 0, None)
    return t0, overlap * scale  # / footprint length (1 / scale)


def resample_crops(
    crops: Sequence[Optional[Crop]], src_shape: Tuple[int, int], dst_shape: Tuple[int, int]
) -> List[Optional[Crop]]:
    """
    Disjoint instance masks on the source grid -> disjoint masks on the target grid (module
    docstring). A target pixel is foreground when the instances cover more than half of its
    footprint (exactly half: on the even squares of a checkerboard, so that ties add no area on
    average), and belongs to the instance covering most of it (equal shares: the smaller instance,
    as :mod:`.rasterize`'s overlap rule). An instance left without pixels becomes None.
    """
    if tuple(src_shape) == tuple(dst_shape):
        return list(crops)
    (H, W), (h, w) = src_shape, dst_shape
    total = np.zeros((h, w))
    best = np.zeros((h, w))
    owner = np.zeros((h, w), np.int32)
    boxes: List[Optional[Tuple[int, int, int, int]]] = [None] * len(crops)
    areas = [0 if c is None else int(np.count_nonzero(c[0])) for c in crops]
    for i in sorted((i for i, c in enumerate(crops) if c is not None), key=lambda i: (-areas[i], i)):
        mask, x0, y0 = crops[i]
        ty0, ay = _coverage(H, h, y0, mask.shape[0])
        tx0, ax = _coverage(W, w, x0, mask.shape[1])
        frac = ay @ mask.astype(np.float64) @ ax.T
        region = (slice(ty0, ty0 + frac.shape[0]), slice(tx0, tx0 + frac.shape[1]))
        total[region] += frac
        wins = (frac > 0) & (frac >= best[region])  # later = smaller or equal: wins ties
        best[region][wins] = frac[wins]
        owner[region][wins] = i + 1
        boxes[i] = (tx0, ty0, frac.shape[1], frac.shape[0])
    eps = 1e-9
    background = total < 0.5 - eps
    ty, tx = np.nonzero(np.abs(total - 0.5) <= eps)
    odd = (ty + tx) % 2 == 1
    background[ty[odd], tx[odd]] = True
    owner[background] = 0
    return instance_crops(owner, boxes)


def scale_geometry(geom, sx: float, sy: float, dx: float = 0.0, dy: float = 0.0):
    """Outline -> target grid: translated by (dx, dy) source px (a slide region's origin), then scaled."""
    from shapely import affinity

    if dx or dy:
        geom = affinity.translate(geom, dx, dy)
    if sx == 1.0 and sy == 1.0:
        return geom
    return affinity.scale(geom, sx, sy, origin=(0.0, 0.0))
