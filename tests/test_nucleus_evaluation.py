# -*- coding: utf-8 -*-
"""NucleusEvaluator against plain pycocotools runs and direct metric computations."""
import contextlib
import copy
import io
import json
import math
import os
import uuid

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation.coco_evaluation import COCOevalMaxDets
from detectron2.structures import Boxes, BoxMode, Instances

from d2_nucleus.config import add_nucleus_config
from d2_nucleus.evaluation import NucleusEvaluator, compute_nucleus_metrics
from d2_nucleus.utils.label_map import rles_to_label_map

H, W = 192, 192
COCO_KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


def _encode(mask):
    return mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))


def _make_image(rng, num_nuclei):
    """Ground-truth masks (non-overlapping disks, two of them 'medium') and noisy predictions."""
    yy, xx = np.mgrid[:H, :W]
    label = np.zeros((H, W), dtype=np.int32)
    for k in range(num_nuclei):
        r = 20 if k < 2 else rng.integers(3, 9)
        cy, cx = rng.integers(0, H), rng.integers(0, W)
        disk = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (label == 0)
        label[disk] = k + 1
    gt_masks = [label == k for k in np.unique(label) if k]
    pred_masks, scores = [], []
    for m in gt_masks:
        if rng.random() < 0.85:
            shifted = np.roll(m, (rng.integers(-2, 3), rng.integers(-2, 3)), axis=(0, 1))
            pred_masks.append(shifted)
            scores.append(rng.random())
            if rng.random() < 0.3:  # duplicate, usually lower score
                pred_masks.append(np.roll(m, 2, axis=1))
                scores.append(rng.random() * 0.5)
    for _ in range(40):  # false positives
        r, cy, cx = rng.integers(3, 8), rng.integers(0, H), rng.integers(0, W)
        pred_masks.append((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)
        scores.append(rng.random() * 0.7)
    scores = np.round(np.asarray(scores), 4)  # a few ties on purpose
    return gt_masks, pred_masks, scores


@pytest.fixture(scope="module")
def synthetic():
    """3 images, ~110 nuclei and ~150 predictions each (> 100, so the challenge cut matters)."""
    rng = np.random.default_rng(0)
    images = []
    for i in range(3):
        gt_masks, pred_masks, scores = _make_image(rng, 110)
        images.append({"image_id": 10 + i, "gt": gt_masks, "pred": pred_masks, "scores": scores})
    assert all(len(im["pred"]) > 130 for im in images)
    return images


def _dataset_dicts(images, image_ids=None):
    dicts = []
    for k, im in enumerate(images):
        anns = []
        for m in im["gt"]:
            rle = _encode(m)
            x, y, w, h = mask_util.toBbox(rle)
            anns.append(
                {
                    "bbox": [float(x), float(y), float(x + w), float(y + h)],
                    "bbox_mode": BoxMode.XYXY_ABS,
                    "category_id": 0,
                    "segmentation": rle,
                    "iscrowd": 0,
                }
            )
        image_id = im["image_id"] if image_ids is None else image_ids[k]
        dicts.append(
            {"file_name": f"img{k}.png", "image_id": image_id, "height": H, "width": W, "annotations": anns}
        )
    return dicts


@contextlib.contextmanager
def _registered(images, image_ids=None, **metadata):
    name = "test_nucleus_eval_" + uuid.uuid4().hex[:8]
    dicts = _dataset_dicts(images, image_ids)
    DatasetCatalog.register(name, lambda: copy.deepcopy(dicts))
    MetadataCatalog.get(name).set(
        thing_classes=["nucleus"], thing_dataset_id_to_contiguous_id={1: 0}, **metadata
    )
    try:
        yield name, dicts
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _instances(im, use_rles=True):
    n = len(im["pred"])
    inst = Instances((H, W))
    rles = [_encode(m) for m in im["pred"]]
    boxes = BoxMode.convert(mask_util.toBbox(rles), BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
    inst.pred_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32))
    inst.scores = torch.as_tensor(im["scores"], dtype=torch.float32)
    inst.pred_classes = torch.zeros(n, dtype=torch.int64)
    if use_rles:
        inst.pred_rles = rles  # bytes counts, as pycocotools makes them
    else:
        inst.pred_masks = torch.as_tensor(np.stack(im["pred"]))
    return inst


def _run(evaluator, images, dicts, use_rles=True):
    evaluator.reset()
    for im, d in zip(images, dicts):
        evaluator.process(
            [{"image_id": d["image_id"], "height": H, "width": W}],
            [{"instances": _instances(im, use_rles)}],
        )
    return evaluator.evaluate()


def _pycocotools(images, iou_type, max_dets=None):
    """
    Plain pycocotools COCOeval, GT and results built independently of the evaluator. With
    max_dets, Detectron2's COCOevalMaxDets: pycocotools' evaluation, with a summarize() that
    reports AP at maxDets[2] instead of a hard-coded 100.
    """
    gt = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "nucleus"}]}
    results = []
    for im in images:
        gt["images"].append({"id": im["image_id"], "height": H, "width": W})
        for m in im["gt"]:
            rle = _encode(m)
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": im["image_id"],
                    "category_id": 1,
                    "segmentation": rle,
                    "area": float(mask_util.area(rle)),
                    "bbox": mask_util.toBbox(rle).tolist(),
                    "iscrowd": 0,
                }
            )
        for m, s in zip(im["pred"], im["scores"]):
            rle = _encode(m)
            r = {"image_id": im["image_id"], "category_id": 1, "score": float(s)}
            if iou_type == "segm":
                r["segmentation"] = rle
            else:
                r["bbox"] = mask_util.toBbox(rle).tolist()
            results.append(r)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if max_dets is None:
            e = COCOeval(coco_gt, coco_gt.loadRes(results), iou_type)
        else:
            e = COCOevalMaxDets(coco_gt, coco_gt.loadRes(results), iou_type)
            e.params.maxDets = [1, 10, max_dets]
        e.evaluate()
        e.accumulate()
        e.summarize()
    return [float(s) * 100 if s >= 0 else float("nan") for s in e.stats]


def _same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-9)


def _assert_same_results(a, b):
    """Equal results (NaN == NaN)."""
    assert list(a.keys()) == list(b.keys())
    for task in a:
        assert sorted(a[task].keys()) == sorted(b[task].keys()), task
        for key in a[task]:
            assert _same(a[task][key], b[task][key]), (task, key, a[task][key], b[task][key])


@pytest.fixture(scope="module")
def results_fast(synthetic):
    with _registered(synthetic) as (name, dicts):
        ev = NucleusEvaluator(name, distributed=False, max_dets_per_image=3000)
        return _run(ev, synthetic, dicts)


@pytest.mark.parametrize("use_fast_impl", [True, False])
def test_challenge_metric_equals_pycocotools_default(synthetic, results_fast, use_fast_impl):
    if use_fast_impl:
        res = results_fast
    else:
        with _registered(synthetic) as (name, dicts):
            ev = NucleusEvaluator(name, distributed=False, max_dets_per_image=3000, use_fast_impl=False)
            res = _run(ev, synthetic, dicts)
    stats = _pycocotools(synthetic, "segm")  # default maxDets [1, 10, 100]
    assert res["segm"]["AP50@100"] == pytest.approx(stats[1], abs=1e-9)
    # the challenge metric really differs from the dense AP50 here
    assert res["segm"]["AP50"] > res["segm"]["AP50@100"] + 1


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_dense_ap_equals_pycocotools(synthetic, results_fast, iou_type):
    stats = _pycocotools(synthetic, iou_type, max_dets=3000)
    ours = results_fast[iou_type]
    for k, key in enumerate(COCO_KEYS):
        assert _same(ours[key], stats[k]), (key, ours[key], stats[k])
    assert not math.isnan(ours["APm"])  # the two big nuclei make APm defined


def test_nucleus_metrics_are_per_image_means(synthetic, results_fast):
    per_image = []
    for im in synthetic:
        gt = rles_to_label_map([_encode(m) for m in im["gt"]], H, W)
        keep = np.flatnonzero(im["scores"] >= 0.5)
        pred = rles_to_label_map([_encode(im["pred"][i]) for i in keep], H, W, im["scores"][keep])
        per_image.append(compute_nucleus_metrics(gt, pred))
    for key in ("AJI", "PQ", "DQ", "SQ", "Dice"):
        expected = np.mean([m[key] for m in per_image])
        assert results_fast["nucleus"][key] == pytest.approx(expected, abs=1e-12)
        assert 0 < results_fast["nucleus"][key] < 1
    assert list(results_fast.keys()) == ["bbox", "segm", "nucleus"]


def test_pred_masks_and_pred_rles_agree(synthetic, results_fast):
    with _registered(synthetic) as (name, dicts):
        ev = NucleusEvaluator(name, distributed=False, max_dets_per_image=3000)
        res = _run(ev, synthetic, dicts, use_rles=False)
    _assert_same_results(res, results_fast)


def test_stale_cached_ground_truth_is_ignored(synthetic, results_fast, tmp_path):
    with _registered(synthetic) as (name, dicts):
        # what Detectron2's COCOEvaluator would have cached, from other data
        stale = tmp_path / f"{name}_coco_format.json"
        stale_dict = {
            "images": [{"id": d["image_id"], "height": H, "width": W, "file_name": ""} for d in dicts],
            "annotations": [
                {"id": 1, "image_id": dicts[0]["image_id"], "category_id": 1, "bbox": [0, 0, 5, 5],
                 "area": 25.0, "iscrowd": 0, "segmentation": [[0, 0, 5, 0, 5, 5, 0, 5]]}
            ],
            "categories": [{"id": 1, "name": "nucleus"}],
        }
        stale.write_text(json.dumps(stale_dict))
        before = stale.read_bytes()
        MetadataCatalog.get(name).set(json_file=str(stale))
        ev = NucleusEvaluator(name, distributed=False, output_dir=str(tmp_path), max_dets_per_image=3000)
        res = _run(ev, synthetic, dicts)
        _assert_same_results(res, results_fast)
        assert stale.read_bytes() == before


def test_outputs_saved(synthetic, results_fast, tmp_path):
    out = tmp_path / "eval"
    with _registered(synthetic) as (name, dicts):
        ev = NucleusEvaluator(name, distributed=False, output_dir=str(out), max_dets_per_image=3000)
        res = _run(ev, synthetic, dicts)
    assert sorted(os.listdir(out)) == ["coco_instances_results.json", "nucleus_metrics.json"]
    preds = json.loads((out / "coco_instances_results.json").read_text())
    assert len(preds) == sum(len(im["pred"]) for im in synthetic)
    assert {p["image_id"] for p in preds} == {im["image_id"] for im in synthetic}
    assert {p["category_id"] for p in preds} == {1}  # dataset id, not the contiguous 0
    assert isinstance(preds[0]["segmentation"]["counts"], str)
    saved = json.loads((out / "nucleus_metrics.json").read_text())
    assert saved["results"]["segm"]["AP50@100"] == pytest.approx(res["segm"]["AP50@100"])
    assert saved["results"]["nucleus"] == pytest.approx(dict(res["nucleus"]))
    assert saved["results"]["segm"]["APl"] is None  # NaN saved as null (strict JSON)
    assert len(saved["per_image"]) == 3 and saved["settings"]["max_dets_per_image"] == 3000


def test_string_image_ids_and_from_config(synthetic, results_fast):
    cfg = get_cfg()
    add_nucleus_config(cfg)
    cfg.TEST.DETECTIONS_PER_IMAGE = 3000
    with _registered(synthetic, image_ids=["a", "b", "c"]) as (name, dicts):
        ev = NucleusEvaluator.from_config(cfg, name)
        assert ev._max_dets == 3000 and ev._challenge_max_dets == 100
        res = _run(ev, synthetic, dicts)
    _assert_same_results(res, results_fast)


def test_score_threshold_and_challenge_dets_from_cfg(synthetic, results_fast):
    cfg = get_cfg()
    add_nucleus_config(cfg)
    cfg.TEST.DETECTIONS_PER_IMAGE = 3000
    cfg.TEST.LABEL_MAP_SCORE_THRESH = 0.0
    cfg.TEST.CHALLENGE_MAX_DETS = 50
    with _registered(synthetic) as (name, dicts):
        ev = NucleusEvaluator(name, cfg, distributed=False)
        res = _run(ev, synthetic, dicts)
    assert "AP50@50" in res["segm"] and res["segm"]["AP50@50"] < results_fast["segm"]["AP50@100"]
    assert res["segm"]["AP"] == results_fast["segm"]["AP"]
    assert res["nucleus"]["AJI"] != results_fast["nucleus"]["AJI"]


def test_perfect_and_empty_predictions(synthetic):
    perfect = [dict(im, pred=im["gt"], scores=np.linspace(1, 0.5, len(im["gt"]))) for im in synthetic]
    empty = [dict(im, pred=[], scores=np.zeros(0)) for im in synthetic]
    with _registered(synthetic) as (name, dicts):
        ev = NucleusEvaluator(name, distributed=False, max_dets_per_image=3000)
        res = _run(ev, perfect, dicts)
        assert res["segm"]["AP"] == pytest.approx(100) and res["bbox"]["AP"] == pytest.approx(100)
        assert res["nucleus"] == pytest.approx({k: 1.0 for k in ("AJI", "PQ", "DQ", "SQ", "Dice")})
        ev.reset()
        for im, d in zip(empty, dicts):
            inst = Instances((H, W), pred_boxes=Boxes(torch.zeros(0, 4)), scores=torch.zeros(0),
                             pred_classes=torch.zeros(0, dtype=torch.int64),
                             pred_masks=torch.zeros(0, H, W, dtype=torch.bool))
            ev.process([{"image_id": d["image_id"], "height": H, "width": W}], [{"instances": inst}])
        res = ev.evaluate()
        assert res["segm"]["AP"] == 0 and res["segm"]["AP50@100"] == 0
        assert res["nucleus"] == pytest.approx({k: 0.0 for k in ("AJI", "PQ", "DQ", "SQ", "Dice")})


def test_unknown_image_id_and_wrong_size(synthetic):
    with _registered(synthetic) as (name, dicts):
        ev = NucleusEvaluator(name, distributed=False)
        with pytest.raises(KeyError, match="not in dataset"):
            ev.process([{"image_id": 999, "height": H, "width": W}], [{"instances": _instances(synthetic[0])}])
        with pytest.raises(ValueError, match="image is"):
            ev.process([{"image_id": dicts[0]["image_id"], "height": H + 1, "width": W}],
                       [{"instances": _instances(synthetic[0])}])


def test_counted_detections_false_positives_and_ap_bounds():
    """Hand-computed: 4 nuclei, 3 counted detections of which the top-scoring one is false."""
    from d2_nucleus.evaluation.coco_eval import counted_detections

    h = w = 64
    squares = [(2, 2), (2, 30), (30, 2), (30, 30)]
    anns, rles = [], []
    for k, (y, x) in enumerate(squares):
        m = np.zeros((h, w), np.uint8)
        m[y:y + 20, x:x + 20] = 1
        rle = _encode(m)
        rles.append(rle)
        anns.append({"id": k + 1, "image_id": 7, "category_id": 1, "segmentation": rle, "area": 400.0,
                     "bbox": [x, y, 20, 20], "iscrowd": 0})
    gt = COCO()
    gt.dataset = {"images": [{"id": 7, "height": h, "width": w, "file_name": "a.png"}],
                  "categories": [{"id": 1, "name": "nucleus"}], "annotations": anns}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    off = np.zeros((h, w), np.uint8)
    off[52:62, 52:62] = 1  # overlaps no nucleus at IoU 0.5
    results = [
        {"image_id": 7, "category_id": 1, "segmentation": rles[0], "score": 0.8},
        {"image_id": 7, "category_id": 1, "segmentation": _encode(off), "score": 0.9},
        {"image_id": 7, "category_id": 1, "segmentation": rles[1], "score": 0.7},
        {"image_id": 7, "category_id": 1, "segmentation": rles[2], "score": 0.1},  # not counted (4th)
    ]
    r = counted_detections(gt, results, max_dets=3)
    assert sorted(r["counted"]) == [0, 1, 2] and r["false_positives"] == [1]
    assert r["images"] == [{"image_id": 7, "num_gt": 4, "num_counted": 3, "false_positive_ranks": [0]}]
    # recall reaches 2/4: recall points 0..0.5 (51 of 101); precision there at most 2/3 as ranked
    assert r["ap"] == pytest.approx(51 * (2 / 3) / 101)
    assert r["ap_false_positives_last"] == pytest.approx(51 / 101)
    assert r["ap_bound"] == pytest.approx(51 / 101)
    assert r["ap_ceiling"] == pytest.approx(76 / 101)  # all 3 counted true: recall 0.75
