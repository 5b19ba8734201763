# -*- coding: utf-8 -*-
"""Pairing of detections with annotated centres, and the detection / type metrics (hand-computed)."""
import numpy as np
import pytest

from d2_nucleus.types.matching import match_points, radius_px
from d2_nucleus.types.metrics import TypeEvaluation, type_metrics


def test_match_points_one_to_one_within_radius():
    true = [[0, 0], [4, 0], [50, 50]]
    pred = [[2.5, 0], [0.5, 0.5], [100, 100]]
    pairs, ut, up = match_points(true, pred, 3.0)
    assert pairs.tolist() == [[0, 1], [1, 0]]  # least total distance: 0.71 + 1.5
    assert ut.tolist() == [2] and up.tolist() == [2]
    # exactly at the radius is a hit; beyond is not
    assert match_points([[0, 0]], [[3, 0]], 3.0)[0].tolist() == [[0, 0]]
    assert match_points([[0, 0]], [[3.01, 0]], 3.0)[0].tolist() == []
    # empty sides
    pairs, ut, up = match_points(np.zeros((0, 2)), [[1, 1]], 3.0)
    assert pairs.shape == (0, 2) and ut.tolist() == [] and up.tolist() == [0]
    assert radius_px(3.3, 0.55) == pytest.approx(6.0) and radius_px(3.3, 0.275) == pytest.approx(12.0)
    with pytest.raises(ValueError, match="needs the image's resolution"):
        radius_px(3.3, None)


def test_gated_assignment_keeps_pairs_that_hovernets_loses():
    # Least total distance over all distances pairs (5,40)-(20,30) (18 px) and (22,30)-(40,12)
    # (25 px), 43 px in all, then drops both; the gated assignment keeps (22,30)-(20,30) (2 px).
    true = [[10, 10], [22, 30], [5, 40]]
    pred = [[10, 10], [20, 30], [40, 12], [55, 45]]
    gated, _, _ = match_points(true, pred, 6.0)
    hovernet, _, _ = match_points(true, pred, 6.0, gated=False)
    assert gated.tolist() == [[0, 0], [1, 1]]
    assert hovernet.tolist() == [[0, 0]]


def test_type_metrics_hand_computed():
    # centres A (0,0) class 0, B (10,0) class 1, C (20,0) no class, D (40,0) class 0;
    # detections a->A predicted 0, b->B predicted 0, c->C predicted 1, e far away predicted 1.
    ev = TypeEvaluation(["zero", "one"])
    m = ev.add("img", [[0, 0], [10, 0], [20, 0], [40, 0]], [0, 1, -1, 0],
               [[1, 0], [10, 2], [20, 1], [100, 100]], [0, 0, 1, 1], radius=3.0)
    d = m["detection"]
    assert (d["tp"], d["fp"], d["fn"]) == (3, 1, 1)
    assert d["precision"] == pytest.approx(0.75) and d["recall"] == pytest.approx(0.75) and d["f1"] == pytest.approx(0.75)
    # class 0: TP 1 (A), FP 1 (B predicted 0), FN 0, FP_d 0, FN_d 1 (D): 2 / (2 + 2 + 1)
    zero = m["joint"]["zero"]
    assert (zero["tp"], zero["tn"], zero["fp"], zero["fn"], zero["fp_d"], zero["fn_d"]) == (1, 0, 1, 0, 0, 1)
    assert zero["f1"] == pytest.approx(0.4)
    # class 1: C (no class) predicted 1 is not a false positive; FN 1 (B), FP_d 1 (e): 0 / (2 + 1)
    one = m["joint"]["one"]
    assert (one["tp"], one["fp"], one["fn"], one["fp_d"], one["fn_d"]) == (0, 0, 1, 1, 0)
    assert one["f1"] == 0.0
    # classification of the paired, classed nuclei: A 0->0, B 1->0
    c = m["classification"]
    assert c["n"] == 2 and c["confusion"] == [[1, 0], [1, 0]] and c["accuracy"] == pytest.approx(0.5)
    assert c["per_class"]["zero"]["f1"] == pytest.approx(2 / 3) and c["per_class"]["one"]["f1"] == 0.0
    assert c["weighted_f1"] == pytest.approx(1 / 3) and c["paired_without_class"] == 1

    # pooled over images: counts add up (a second image: one centre of class 1 found as 1)
    ev.add("img2", [[5, 5]], [1], [[5, 6]], [1], radius=3.0)
    pooled = ev.results()["pooled"]
    assert pooled["detection"]["tp"] == 4
    assert pooled["joint"]["one"]["f1"] == pytest.approx(2 / (2 + 2 + 1))
    assert pooled["classification"]["confusion"] == [[1, 0], [1, 1]]
    assert [r["image"] for r in ev.results()["images"]] == ["img", "img2"]


def test_type_metrics_empty():
    m = type_metrics([], [], [], [], ["a"])
    assert m["detection"]["f1"] is None and m["joint"]["a"]["f1"] is None
    assert m["classification"]["weighted_f1"] is None


def test_image_nuclei_above_a_score_keeps_rows_together():
    from d2_nucleus.types.detect import ImageNuclei

    cols = {"score": np.array([0.9, 0.2, 0.6]), "centroid_x": np.array([1.0, 2.0, 3.0]),
            "centroid_y": np.array([4.0, 5.0, 6.0])}
    feats = {"box": np.arange(6, dtype=np.float32).reshape(3, 2)}
    nuc = ImageNuclei("a", cols, feats, rles=["r0", "r1", "r2"])
    kept = nuc.above(0.5)
    assert len(kept) == 2 and kept.name == "a"
    np.testing.assert_array_equal(kept.xy, [[1, 4], [3, 6]])
    np.testing.assert_array_equal(kept.features["box"], [[0, 1], [4, 5]])
    assert kept.rles == ["r0", "r2"] and len(nuc) == 3  # the original unchanged
    assert len(nuc.above(0.95)) == 0
