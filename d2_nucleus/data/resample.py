# -*- coding: utf-8 -*-
"""
Resolution of imported annotations: the source's microns per pixel (mpp), the factor to the
model's, and the one resampler of images, instance masks and outlines to the target grid.

* ``factor = source_mpp / target_mpp``: a 40x source (0.25 um/px) imported at 0.5 um/px is halved
  (0.5), a 20x source (0.5 um/px) for the 0.25 um/px model is doubled (2). A source within
  :data:`MPP_TOLERANCE` (relative) of the target keeps its pixels (factor 1).
* The target image is ``round(W * factor) x round(H * factor)`` px; target pixel (u, v) covers
  the source square [u / sx, (u + 1) / sx) x [v / sy, (v + 1) / sy), with ``sx``, ``sy`` the exact
  per-axis ratios of the sizes (so images, masks and outlines share one grid).
* Images: area averaging when shrinking, bilinear when enlarging (OpenCV ``INTER_AREA`` /
  ``INTER_LINEAR``).
* Outlines (polygon formats): the vertices are scaled by (sx, sy) and rasterised at the target
  resolution (:mod:`.rasterize`): no resampling of pixels at all.
* Instance masks (label images, RLE): each instance separately, its covered fraction of every
  target pixel's footprint computed exactly (separable box integration) and thresholded at 0.5,
  so areas scale by ``sx * sy`` on average and instances stay distinct; a target pixel claimed by
  two touching instances (both exactly 0.5) goes by the overlap rule of :mod:`.rasterize`.
"""
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .rasterize import Crop

__all__ = [
    "MPP_TOLERANCE",
    "MIN_MPP",
    "MAX_MPP",
    "check_mpp",
    "scale_factor",
    "target_size",
    "resample_image",
    "resample_crops",
    "scale_geometry",
]

#: Sources whose mpp is within this relative difference of the target are not resampled (nucleus
#: sizes vary far more between scanners and patients; 0.2527 um/px MoNuSeg is 1.1% off 0.25).
MPP_TOLERANCE = 0.02
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


def scale_factor(source_mpp: float, target_mpp: float, tolerance: float = MPP_TOLERANCE) -> float:
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
    Instance masks on the source grid -> the target grid (module docstring): each crop's covered
    fraction of every target pixel, >= 0.5 kept. A crop left without pixels becomes None.
    Overlaps between the results are left for :func:`.rasterize.paint_instances`.
    """
    (H, W), (h, w) = src_shape, dst_shape
    out: List[Optional[Crop]] = []
    for c in crops:
        if c is None:
            out.append(None)
            continue
        mask, x0, y0 = c
        ty0, ay = _coverage(H, h, y0, mask.shape[0])
        tx0, ax = _coverage(W, w, x0, mask.shape[1])
        frac = ay @ mask.astype(np.float64) @ ax.T
        keep = frac >= 0.5 - 1e-9
        rows, cols = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
        if rows.size == 0:
            out.append(None)
            continue
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        out.append((np.ascontiguousarray(keep[r0:r1, c0:c1]), int(tx0 + c0), int(ty0 + r0)))
    return out


def scale_geometry(geom, sx: float, sy: float, dx: float = 0.0, dy: float = 0.0):
    """Outline -> target grid: translated by (dx, dy) source px (a slide region's origin), then scaled."""
    from shapely import affinity

    if dx or dy:
        geom = affinity.translate(geom, dx, dy)
    if sx == 1.0 and sy == 1.0:
        return geom
    return affinity.scale(geom, sx, sy, origin=(0.0, 0.0))
