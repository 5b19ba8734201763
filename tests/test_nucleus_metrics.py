# -*- coding: utf-8 -*-
"""AJI / PQ / DQ / SQ / Dice on hand-computed cases, edge cases, and a per-pair reference."""
import math

import numpy as np
import pycocotools.mask as mask_util
import pytest

from d2_nucleus.evaluation.nucleus_metrics import (
    aggregated_jaccard_index,
    compute_nucleus_metrics,
    dice_coefficient,
    image_nucleus_metrics,
    instance_contingency,
    panoptic_quality,
)
from d2_nucleus.utils.label_map import annotations_to_label_map, rles_to_label_map
from d2_nucleus.utils.rle import rle_counts


def _approx(metrics, expected):
    for k, v in expected.items():
        assert metrics[k] == pytest.approx(v, abs=1e-12), k


def test_hand_computed_case():
    gt = np.array(
        [
            [1, 1, 0, 0, 2, 2],
            [1, 1, 0, 0, 2, 2],
            [0, 0, 0, 0, 0, 0],
            [3, 3, 0, 0, 0, 0],
        ]
    )
    pred = np.array(
        [
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0, 2],
            [0, 0, 0, 0, 0, 2],
            [0, 0, 0, 0, 4, 4],
        ]
    )  # label 3 unused: labels need not be contiguous
    # gt1 (4 px) & pred1 (6 px): inter 4, union 6, IoU 2/3
    # gt2 (4 px) & pred2 (2 px): inter 1, union 5, IoU 1/5
    # gt3 (2 px) and pred4 (2 px) overlap nothing
    # AJI = (4 + 1) / (6 + 5 + 2 + 2) = 1/3
    # PQ pairs (IoU > 0.5): gt1-pred1 -> TP 1, FP 2, FN 2: DQ = 1 / (1 + 1 + 1) = 1/3, SQ = 2/3
    # Dice: |G| = 10, |P| = 10, |G & P| = 5 -> 0.5
    m = compute_nucleus_metrics(gt, pred)
    _approx(m, {"AJI": 1 / 3, "DQ": 1 / 3, "SQ": 2 / 3, "PQ": 2 / 9, "Dice": 0.5})


def test_prediction_paired_with_two_nuclei():
    gt = np.array([[1, 1, 0, 2, 2, 0]])
    pred = np.array([[5, 5, 5, 5, 5, 0]])
    # both nuclei pick pred 5 (IoU 2/5 each); its area enters the union twice:
    # AJI = (2 + 2) / (5 + 5) = 0.4. No IoU > 0.5: TP 0, FP 1, FN 2 -> PQ = DQ = SQ = 0
    # Dice = 2 * 4 / (4 + 5) = 8/9
    m = compute_nucleus_metrics(gt, pred)
    _approx(m, {"AJI": 0.4, "PQ": 0.0, "DQ": 0.0, "SQ": 0.0, "Dice": 8 / 9})


def test_ties_and_strict_match_threshold():
    gt = np.array([[1, 1, 1, 1]])
    pred = np.array([[7, 7, 3, 3]])
    # IoU 2/4 with both: argmax takes the smaller label (3); pred 7 is unpaired:
    # AJI = 2 / (4 + 2) = 1/3. IoU 0.5 is not > 0.5: TP 0, FP 2, FN 1 -> DQ 0. Dice 1.
    m = compute_nucleus_metrics(gt, pred)
    _approx(m, {"AJI": 1 / 3, "PQ": 0.0, "DQ": 0.0, "SQ": 0.0, "Dice": 1.0})


def test_perfect_prediction_with_other_labels():
    gt = np.zeros((8, 8), dtype=np.int32)
    gt[0:3, 0:3] = 1
    gt[4:8, 4:6] = 2
    gt[5, 0:2] = 3
    pred = np.zeros_like(gt)
    pred[gt == 1], pred[gt == 2], pred[gt == 3] = 30, 10, 20
    _approx(compute_nucleus_metrics(gt, pred), {k: 1.0 for k in ("AJI", "PQ", "DQ", "SQ", "Dice")})


def test_partial_match_pq():
    gt = np.zeros((4, 10), dtype=np.int32)
    gt[:, 0:4] = 1  # 16 px
    gt[:, 6:10] = 2  # 16 px
    pred = np.zeros_like(gt)
    pred[:, 0:3] = 1  # 12 px inside gt1: IoU 12/16 = 0.75
    pred[0:2, 5:10] = 2  # 10 px, 8 in gt2: IoU 8 / (16 + 10 - 8) = 4/9
    # TP 1 (IoU 0.75), FP 1, FN 1: DQ = 1 / 2, SQ = 0.75, PQ = 0.375
    # AJI = (12 + 8) / (16 + 18) = 10/17; Dice = 2 * 20 / (32 + 22) = 20/27
    m = compute_nucleus_metrics(gt, pred)
    _approx(m, {"DQ": 0.5, "SQ": 0.75, "PQ": 0.375, "AJI": 10 / 17, "Dice": 20 / 27})


def test_empty_prediction():
    gt = np.zeros((5, 5), dtype=np.int32)
    gt[1:3, 1:3] = 4
    m = compute_nucleus_metrics(gt, np.zeros_like(gt))
    _approx(m, {"AJI": 0.0, "PQ": 0.0, "DQ": 0.0, "SQ": 0.0, "Dice": 0.0})


def test_empty_ground_truth():
    pred = np.zeros((5, 5), dtype=np.int32)
    pred[0, 0] = 1
    m = compute_nucleus_metrics(np.zeros_like(pred), pred)
    _approx(m, {"AJI": 0.0, "PQ": 0.0, "DQ": 0.0, "SQ": 0.0, "Dice": 0.0})


def test_both_empty_is_undefined():
    z = np.zeros((3, 3), dtype=np.int32)
    assert all(math.isnan(v) for v in compute_nucleus_metrics(z, z).values())


def test_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        compute_nucleus_metrics(np.zeros((3, 3), int), np.zeros((3, 4), int))
    with pytest.raises(ValueError, match="negative"):
        compute_nucleus_metrics(-np.ones((3, 3), int), np.zeros((3, 3), int))
    with pytest.raises(TypeError):
        compute_nucleus_metrics(np.zeros((3, 3), float), np.zeros((3, 3), int))


def _reference(gt, pred):
    """Straightforward per-pair implementation (HoVer-Net's definitions)."""
    gt_ids = [i for i in np.unique(gt) if i]
    pred_ids = [i for i in np.unique(pred) if i]
    inter = np.zeros((len(gt_ids), len(pred_ids)))
    union = np.zeros_like(inter)
    for a, g in enumerate(gt_ids):
        for b, p in enumerate(pred_ids):
            gm, pm = gt == g, pred == p
            inter[a, b] = (gm & pm).sum()
            union[a, b] = (gm | pm).sum()
    iou = inter / np.maximum(union, 1)
    best = iou.argmax(axis=1) if len(pred_ids) else np.zeros(len(gt_ids), int)
    paired = [a for a in range(len(gt_ids)) if len(pred_ids) and iou[a, best[a]] > 0]
    used = {best[a] for a in paired}
    num = sum(inter[a, best[a]] for a in paired)
    den = sum(union[a, best[a]] for a in paired)
    den += sum((gt == gt_ids[a]).sum() for a in range(len(gt_ids)) if a not in paired)
    den += sum((pred == pred_ids[b]).sum() for b in range(len(pred_ids)) if b not in used)
    matched = iou[iou > 0.5]
    tp = len(matched)
    dq = tp / (tp + 0.5 * (len(pred_ids) - tp) + 0.5 * (len(gt_ids) - tp))
    sq = matched.sum() / tp if tp else 0.0
    dice = 2 * ((gt > 0) & (pred > 0)).sum() / ((gt > 0).sum() + (pred > 0).sum())
    return {"AJI": num / den, "PQ": dq * sq, "DQ": dq, "SQ": sq, "Dice": dice}


def _random_label_map(rng, h, w, n, max_r):
    out = np.zeros((h, w), dtype=np.int32)
    yy, xx = np.mgrid[:h, :w]
    labels = rng.choice(np.arange(1, 10 * n), size=n, replace=False)
    for lab in labels:
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(2, max_r)
        out[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = lab
    return out


@pytest.mark.parametrize("seed", range(6))
def test_matches_per_pair_reference(seed):
    rng = np.random.default_rng(seed)
    gt = _random_label_map(rng, 48, 40, 12, 8)
    pred = _random_label_map(rng, 48, 40, 14, 8)
    if seed == 0:  # a prediction close to the truth, so PQ has matches
        pred = np.where(rng.random(gt.shape) < 0.9, gt, 0)
    ours = compute_nucleus_metrics(gt, pred)
    ref = _reference(gt, pred)
    for k in ref:
        assert ours[k] == pytest.approx(ref[k], abs=1e-12), k


def test_individual_functions_agree():
    rng = np.random.default_rng(7)
    gt, pred = _random_label_map(rng, 32, 32, 8, 6), _random_label_map(rng, 32, 32, 8, 6)
    t = instance_contingency(gt, pred)
    m = compute_nucleus_metrics(gt, pred)
    assert aggregated_jaccard_index(gt, pred) == aggregated_jaccard_index(t) == m["AJI"]
    assert panoptic_quality(gt, pred)["PQ"] == m["PQ"]
    assert dice_coefficient(gt, pred) == m["Dice"]


# -------------------------------------------------------------------------------------------------
# label maps
# -------------------------------------------------------------------------------------------------
def _rle(mask):
    return mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))


def test_rle_counts_matches_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(100):
        h, w = rng.integers(1, 70, 2)
        mask = rng.random((h, w)) < rng.random()
        rle = _rle(mask)
        counts = rle_counts(rle)
        assert counts.sum() == h * w
        assert (rles_to_label_map([rle], h, w) == mask).all()
        # str counts and uncompressed list counts too
        rle_str = {"size": rle["size"], "counts": rle["counts"].decode()}
        assert (rles_to_label_map([rle_str], h, w) == mask).all()
        assert (rles_to_label_map([{"size": [h, w], "counts": counts.tolist()}], h, w) == mask).all()


def test_label_map_overlaps_follow_scores():
    a = np.zeros((6, 6), bool)
    a[0:4, 0:4] = True
    b = np.zeros((6, 6), bool)
    b[2:6, 2:6] = True
    rles = [_rle(a), _rle(b)]
    lab = rles_to_label_map(rles, 6, 6, scores=[0.2, 0.9])  # b scores higher: wins the overlap
    assert (lab[2:4, 2:4] == 2).all() and lab[0, 0] == 1 and lab[5, 5] == 2
    assert (lab == 1).sum() == 12 and (lab == 2).sum() == 16
    lab = rles_to_label_map(rles, 6, 6)  # no scores: the earlier one wins
    assert (lab[2:4, 2:4] == 1).all() and (lab == 2).sum() == 12
    assert lab.dtype == np.int32
    with pytest.raises(ValueError, match="size"):
        rles_to_label_map(rles, 6, 7)
    assert (rles_to_label_map([], 3, 4) == 0).all()


def test_label_map_min_visible_drops_fragments():
    a = np.zeros((6, 6), bool)
    a[0:4, 0:4] = True  # 16 px
    b = np.zeros((6, 6), bool)
    b[1:5, 1:5] = True  # 16 px, 9 under a
    c = np.zeros((6, 6), bool)
    c[5, 0:2] = True  # 2 px, free
    rles = [_rle(a), _rle(b), _rle(c)]
    scores = [0.9, 0.8, 0.7]
    lab = rles_to_label_map(rles, 6, 6, scores=scores)
    assert (lab == 2).sum() == 7  # b keeps a 7 px fragment by default
    for frac in (7 / 16, 0.4):  # 7/16 of b is free: kept at <= 7/16
        assert (rles_to_label_map(rles, 6, 6, scores=scores, min_visible=frac) == lab).all()
    lab = rles_to_label_map(rles, 6, 6, scores=scores, min_visible=0.5)
    assert (lab == 2).sum() == 0 and (lab == 1).sum() == 16 and (lab == 3).sum() == 2
    # the dropped detection's pixels are not given to anyone else; numbering unchanged
    assert (lab[4, 1:5] == 0).all() and lab[5, 0] == 3
    m = image_nucleus_metrics([], rles, np.array(scores), 6, 6, 0.5, min_visible=0.5)
    assert m["num_pred"] == 2


def test_annotations_to_label_map_rle_and_polygons():
    m = np.zeros((10, 10), bool)
    m[1:4, 1:4] = True
    polygon = [[6.0, 6.0, 9.0, 6.0, 9.0, 9.0, 6.0, 9.0]]
    anns = [
        {"segmentation": _rle(m)},
        {"segmentation": polygon},
        {"segmentation": _rle(m), "iscrowd": 1},
    ]
    lab = annotations_to_label_map(anns, 10, 10)
    assert (lab[m] == 1).all()
    expected_poly = mask_util.decode(mask_util.merge(mask_util.frPyObjects(polygon, 10, 10))).astype(bool)
    assert ((lab == 2) == expected_poly).all() and expected_poly.sum() > 0
    assert not (lab == 3).any()
