# -*- coding: utf-8 -*-
"""
Convex-hull areas of stacks of masks, pixel for pixel those of regionprops ``area_convex``
(``skimage.morphology.convex_hull_image(image)``, default arguments): the hull of the pixels'
edge midpoints ((r +- 0.5, c) and (r, c +- 0.5)) of the pixels that start or end a row or a
column of the mask, and the pixels whose centres lie inside or on that hull.

scikit-image builds each hull with Qhull and rasterises it with a point-in-polygon test of every
pixel of the region's box, region by region (most of regionprops' time; BENCHMARKS.md
"Per-nucleus measurements"). Here the hulls are built with OpenCV's ``convexHull`` on integer
coordinates (doubled, so the midpoints are integers), and the pixels inside are counted for all
masks at once with exact integer arithmetic: for every hull edge and every pixel row it crosses,
the crossing's column as a fraction, rounded inwards; the row's count is the number of integer
columns between the leftmost and the rightmost crossing (both included, as scikit-image counts
pixels on the hull's boundary).
"""
import cv2
import numpy as np

__all__ = ["convex_area"]

# Edge midpoints of a pixel at (2r, 2c) in doubled coordinates, as (x, y) = (col, row).
_DIAMOND = np.array([[0, -1], [0, 1], [-1, 0], [1, 0]], dtype=np.int32)


def _candidate_points(s: np.ndarray):
    """Mask index and (col, row) of the first / last pixel of every row and column of each mask."""
    k, height, width = s.shape
    parts = []
    for axis, size in ((2, width), (1, height)):  # along rows, then along columns
        hit = s.any(axis=axis)  # (k, H) rows with a pixel / (k, W) columns with a pixel
        first = np.argmax(s, axis=axis)
        last = size - 1 - np.argmax(np.flip(s, axis=axis), axis=axis)
        j, line = np.nonzero(hit)
        for pos in (first[j, line], last[j, line]):
            if axis == 2:
                parts.append((j, pos, line))  # col = pos, row = line
            else:
                parts.append((j, line, pos))
    j = np.concatenate([p[0] for p in parts])
    xy = np.stack([np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])], axis=1)
    order = np.argsort(j, kind="stable")
    return j[order], xy[order]


def convex_area(s: np.ndarray) -> np.ndarray:
    """Pixels of the convex hull image of each mask of a (k, H, W) bool stack (0 for an empty mask)."""
    k, height, _ = s.shape
    area = np.zeros(k, dtype=np.int64)
    if k == 0:
        return area
    j, xy = _candidate_points(s)
    if len(j) == 0:
        return area
    pts = (2 * xy.astype(np.int32))[:, None, :] + _DIAMOND[None]  # (P, 4, 2) doubled coordinates
    pts = pts.reshape(-1, 2)
    jj = np.repeat(j, 4)
    bounds = np.searchsorted(jj, np.arange(k + 1))
    hulls, owners = [], []
    # One OpenCV call a mask: the only per-nucleus Python loop of the measurements.
    for m in np.flatnonzero(bounds[1:] > bounds[:-1]).tolist():
        hull = cv2.convexHull(pts[bounds[m] : bounds[m + 1]])[:, 0, :]
        hulls.append(hull)
        owners.append(np.full(len(hull), m, dtype=np.int64))
    v = np.concatenate(hulls).astype(np.int64)
    owner = np.concatenate(owners)
    # edge i runs from vertex i to the next vertex of the same hull (cyclic)
    nxt = np.arange(1, len(v) + 1)
    last_of_hull = np.r_[owner[1:] != owner[:-1], True]
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    nxt[last_of_hull] = starts
    x1, y1 = v[:, 0], v[:, 1]
    x2, y2 = v[nxt, 0], v[nxt, 1]
    # Orient every edge downwards (y1 <= y2); horizontal edges are covered by their vertices.
    swap = y2 < y1
    x1, x2 = np.where(swap, x2, x1), np.where(swap, x1, x2)
    y1, y2 = np.where(swap, y2, y1), np.where(swap, y1, y2)
    slanted = y2 > y1
    # pixel rows r (y = 2r) crossed by each slanted edge
    r_first = -((-y1) // 2)  # ceil(y1 / 2)
    r_last = y2 // 2
    count = np.where(slanted, np.maximum(r_last - r_first + 1, 0), 0)
    e = np.repeat(np.arange(len(v)), count)
    r = np.repeat(r_first, count) + (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count))
    den = (y2 - y1)[e]
    num = x1[e] * den + (2 * r - y1[e]) * (x2 - x1)[e]  # crossing x = num / den (doubled)
    # vertices on a pixel row (even y) cross it too (covers horizontal edges and apexes)
    on_row = (v[:, 1] % 2) == 0
    e_owner = np.r_[owner[e], owner[on_row]]
    e_row = np.r_[r, v[on_row, 1] // 2]
    num = np.r_[num, v[on_row, 0]]
    den = np.r_[den, np.ones(on_row.sum(), dtype=np.int64)]
    # pixel columns c (x = 2c) with crossing_left <= 2c <= crossing_right
    left = -((-num) // (2 * den))  # ceil(num / (2 den))
    right = num // (2 * den)  # floor
    key = e_owner * (height + 1) + e_row
    lo = np.full(k * (height + 1), np.iinfo(np.int64).max)
    hi = np.full(k * (height + 1), np.iinfo(np.int64).min)
    np.minimum.at(lo, key, left)
    np.maximum.at(hi, key, right)
    width_per_row = np.where(hi >= lo, hi - lo + 1, 0)  # rows no edge crosses: 0
    return width_per_row.reshape(k, height + 1).sum(axis=1)
