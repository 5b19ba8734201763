# -*- coding: utf-8 -*-
"""
Shape measurements of stacks of box-local masks, with the definitions of
``skimage.measure.regionprops`` (scikit-image 0.26) and the same values (tests/test_measurements.py):

- ``area``: number of pixels; ``centroid``: mean row / column index of the pixels.
- second moments: the inertia tensor ``[[a, b], [b, c]]`` with ``a = mu02 / mu00``,
  ``b = -mu11 / mu00``, ``c = mu20 / mu00`` (central moments; row axis first), its eigenvalues
  ``l1 >= l2 >= 0``; ``axis_major_length = 4 sqrt(l1)``, ``axis_minor_length = 4 sqrt(l2)``,
  ``eccentricity = sqrt(1 - l2 / l1)`` (0 when l1 = 0), ``orientation = 0.5 atan2(-2b, c - a)``
  (+-pi/4 when a = c), the angle between the row axis and the major axis.
- ``perimeter``: regionprops' default estimator, ``skimage.measure.perimeter(image,
  neighborhood=4)``: the boundary pixels (pixels with a 4-neighbour outside the mask) weighted by
  the configuration of their boundary neighbours (1 for straight, sqrt(2) for diagonal,
  (1 + sqrt(2)) / 2 for corner steps). Holes count (their boundaries are boundary pixels).
- ``equivalent_diameter_area = sqrt(4 area / pi)``; ``solidity = area / area_convex``
  (:mod:`.convex_hull`).

regionprops computes these one region at a time (a Python loop with a scipy call per property);
here each is one numpy expression over a whole stack of masks (see :mod:`.masks`). Second
moments are computed from integer sums (exact), not from accumulated floats.
"""
from math import sqrt
from typing import Dict

import numpy as np

__all__ = ["stack_geometry", "stack_shape", "perimeter_weights", "ellipse_from_moments"]


def perimeter_weights() -> np.ndarray:
    """skimage.measure.perimeter's weight of each border-pixel code (1 + 2 * straight + 10 * diagonal)."""
    weights = np.zeros(50, dtype=np.float64)
    weights[[5, 7, 15, 17, 25, 27]] = 1
    weights[[21, 33]] = sqrt(2)
    weights[[13, 23]] = (1 + sqrt(2)) / 2
    return weights


_PERIMETER_WEIGHTS = perimeter_weights()


def _perimeter(s: np.ndarray) -> np.ndarray:
    """regionprops ``perimeter`` (4-neighbourhood) of each mask of a zero-bordered (k, H, W) stack."""
    inner = (slice(None), slice(1, -1), slice(1, -1))
    # Binary erosion with the 4-neighbourhood cross; outside the mask counts as background.
    eroded = s[inner] & s[:, :-2, 1:-1] & s[:, 2:, 1:-1] & s[:, 1:-1, :-2] & s[:, 1:-1, 2:]
    border = np.zeros(s.shape, dtype=np.uint8)
    border[inner] = s[inner] & ~eroded
    # Convolution with [[10, 2, 10], [2, 1, 2], [10, 2, 10]], evaluated on the inner pixels (the
    # zero frame never holds a border pixel, and only border pixels have non-zero weight).
    b = border
    code = b[inner].copy()
    code += 2 * (b[:, :-2, 1:-1] + b[:, 2:, 1:-1] + b[:, 1:-1, :-2] + b[:, 1:-1, 2:])
    code += 10 * (b[:, :-2, :-2] + b[:, :-2, 2:] + b[:, 2:, :-2] + b[:, 2:, 2:])
    return _PERIMETER_WEIGHTS[code].reshape(len(s), -1).sum(axis=1)


def ellipse_from_moments(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> Dict[str, np.ndarray]:
    """
    Axis lengths, eccentricity and orientation of the inertia tensor ``[[a, b], [b, c]]`` (as
    regionprops: eigenvalues clipped at 0, orientation +-pi/4 when a == c).
    """
    half_sum = (a + c) / 2
    root = np.sqrt(((a - c) / 2) ** 2 + b**2)
    l1 = np.maximum(half_sum + root, 0)
    # l2 as det / l1: no cancellation for thin shapes (det = 0 exactly for a line of pixels).
    det = np.maximum(a * c - b**2, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        l2 = np.where(l1 > 0, det / np.where(l1 > 0, l1, 1), 0.0)
        eccentricity = np.where(l1 > 0, np.sqrt(np.maximum(1 - l2 / np.where(l1 > 0, l1, 1), 0)), 0.0)
    orientation = np.where(a - c == 0, np.where(b < 0, np.pi / 4, -np.pi / 4), 0.5 * np.arctan2(-2 * b, c - a))
    return {
        "axis_major_length": 4 * np.sqrt(l1),
        "axis_minor_length": 4 * np.sqrt(l2),
        "eccentricity": eccentricity,
        "orientation": orientation,
    }


def stack_geometry(s: np.ndarray) -> Dict[str, np.ndarray]:
    """
    Area, centroid and box of each mask of a (k, H, W) bool stack with a zero frame, in *local*
    coordinates (local pixel (0, 0) is stack pixel (1, 1); add the stack's offsets for image
    coordinates). The one computation of these for every d2_nucleus output (per-image
    measurements, the slide table): the centroid is the exact integer sum of the pixels' local
    indices divided by their count.

    Returns:
        dict of (k,) arrays: ``area`` (int64), ``centroid_row``, ``centroid_col`` (float64),
        ``bbox_row0``, ``bbox_col0``, ``bbox_row1``, ``bbox_col1`` (half-open; int64), and the
        stack sums the moments need (``n``, ``s_r``, ``s_c``, ``row_sum``, ``col_sum``). Empty masks
        give area 0, NaN centroid, bbox -1.
    """
    k, height, width = s.shape
    f = s.astype(np.float64)
    row_sum = f.sum(axis=2)  # (k, H): pixels per row
    col_sum = f.sum(axis=1)  # (k, W)
    # Exact integer sums (float64 holds them exactly at nucleus sizes), in stack coordinates.
    n = row_sum.sum(axis=1)
    s_r = row_sum @ np.arange(height, dtype=np.float64)
    s_c = col_sum @ np.arange(width, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        # local index = stack index - 1: the sums of local indices are s - n (exact)
        out = {"area": n.astype(np.int64), "centroid_row": (s_r - n) / n, "centroid_col": (s_c - n) / n}
    empty = n == 0
    for name, hit, size in (("row", row_sum > 0, height), ("col", col_sum > 0, width)):
        first = np.argmax(hit, axis=1)
        last = size - np.argmax(hit[:, ::-1], axis=1)
        out[f"bbox_{name}0"] = np.where(empty, -1, first - 1)
        out[f"bbox_{name}1"] = np.where(empty, -1, last - 1)
    out.update(n=n, s_r=s_r, s_c=s_c, row_sum=row_sum, col_sum=col_sum)
    return out


def stack_shape(s: np.ndarray) -> Dict[str, np.ndarray]:
    """
    Shape measurements of each mask of a (k, H, W) bool stack with a zero frame: those of
    :func:`stack_geometry` (local coordinates) and ``perimeter``, ``axis_major_length``,
    ``axis_minor_length``, ``eccentricity``, ``orientation``, ``equivalent_diameter_area``.
    """
    k, height, width = s.shape
    g = stack_geometry(s)
    n, s_r, s_c = g.pop("n"), g.pop("s_r"), g.pop("s_c")
    row_sum, col_sum = g.pop("row_sum"), g.pop("col_sum")
    rows = np.arange(height, dtype=np.float64)
    cols = np.arange(width, dtype=np.float64)
    s_rr, s_cc = row_sum @ rows**2, col_sum @ cols**2
    s_rc = (s.astype(np.float64) @ cols) @ rows if k else np.zeros(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        n2 = n * n
        # central moments / mu00, from exact integers: (n S_xy - S_x S_y) / n^2
        a = (n * s_cc - s_c * s_c) / n2  # mu02 / mu00 (columns)
        c = (n * s_rr - s_r * s_r) / n2  # mu20 / mu00 (rows)
        b = -(n * s_rc - s_r * s_c) / n2  # -mu11 / mu00
    out = g
    out["perimeter"] = _perimeter(s) if k else np.zeros(0)
    out.update(ellipse_from_moments(a, b, c))
    out["equivalent_diameter_area"] = np.sqrt(4 * n / np.pi)
    return out
