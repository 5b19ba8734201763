# -*- coding: utf-8 -*-
"""
Pairing detected nuclei with annotated centres one to one (Hungarian assignment,
``scipy.optimize.linear_sum_assignment``) within a radius: a detection is a hit when its centroid
lies within the radius of the centre it is paired with: 6 px at 20x (12 px at 40x) as the field
evaluates CRCHisto and CoNSeP, i.e. 3.3 um on CRCHisto's 0.55 um/px (:data:`MATCH_RADIUS_UM`).

Two assignments are offered:

* ``gated=True`` (default): the most pairs within the radius, and of those the least total
  distance (distances beyond the radius cost more than any set of pairs within it);
* ``gated=False``: HoVer-Net's ``pair_coordinates`` exactly: the assignment of least total
  distance over *all* distances, of which the pairs beyond the radius are then dropped. Its
  optimum can give up a pair within the radius to shorten a long one that is dropped anyway
  (tests/test_types_metrics.py has such a case); BENCHMARKS.md "Nucleus types" measures the
  difference on CRCHisto.
"""
from typing import Tuple

import numpy as np

__all__ = ["MATCH_RADIUS_UM", "match_points", "radius_px"]

#: The field's hit radius on CRCHisto, 6 px at 0.55 um/px, in micrometres.
MATCH_RADIUS_UM = 3.3


def radius_px(radius_um: float, mpp: float) -> float:
    """A radius in micrometres as pixels of an image of ``mpp`` um/px."""
    if not (mpp and mpp > 0 and np.isfinite(mpp)):
        raise ValueError(f"a match radius in micrometres needs the image's resolution (mpp), got {mpp}")
    return float(radius_um) / float(mpp)


def match_points(true_xy: np.ndarray, pred_xy: np.ndarray, radius: float,
                 gated: bool = True) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    Pair ``true_xy`` (N x 2) with ``pred_xy`` (M x 2) one to one within ``radius`` (same units);
    ``gated``: see the module docstring.

    Returns:
        pairs: (K, 2) int64 [index into true, index into pred], sorted by the true index;
        unpaired_true: (N - K,) indices; unpaired_pred: (M - K,) indices.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    true_xy = np.asarray(true_xy, np.float64).reshape(-1, 2)
    pred_xy = np.asarray(pred_xy, np.float64).reshape(-1, 2)
    if len(true_xy) == 0 or len(pred_xy) == 0:
        return np.zeros((0, 2), np.int64), np.arange(len(true_xy)), np.arange(len(pred_xy))
    distance = cdist(true_xy, pred_xy)
    cost = distance
    if gated:
        # beyond the radius: more than any min(N, M) pairs within it cost together
        cost = np.where(distance <= radius, distance, radius * (min(distance.shape) + 1) + 1.0)
    rows, cols = linear_sum_assignment(cost)
    keep = distance[rows, cols] <= radius
    pairs = np.stack([rows[keep], cols[keep]], axis=1).astype(np.int64)
    unpaired_true = np.setdiff1d(np.arange(len(true_xy)), pairs[:, 0])
    unpaired_pred = np.setdiff1d(np.arange(len(pred_xy)), pairs[:, 1])
    return pairs, unpaired_true, unpaired_pred
