#!/usr/bin/env python
"""
Evaluation speed on dense synthetic images: faster-coco-eval's C++ COCOeval (imported by d2_nucleus.evaluation.coco_eval,
what NucleusEvaluator uses) vs pycocotools' Python COCOeval, plus label-map painting and the
whole NucleusEvaluator pass.

Data: ``--images`` images of ``--size`` x ``--size`` px, each with ``--nuclei`` non-overlapping
round nuclei (jittered grid, radius 6-20 px) and ``--dets`` detections: a shifted, resized copy
of most nuclei plus duplicates and false positives, random scores. Masks are COCO RLEs.

Measured (wall time, best of ``--repeats``; pycocotools once, it is slow):

1. COCO segm evaluation, evaluate() + accumulate(), maxDets [100, dets]: pycocotools COCOeval vs
   faster-coco-eval; the precision arrays must be identical (max |difference| is printed) and so
   AP, AP50 and the challenge AP50@100;
2. one label map of all detections of an image: ``rles_to_label_map`` (paints the RLE runs) vs
   decoding every RLE with pycocotools into a full-size mask and painting it inside its box;
3. NucleusEvaluator: process() of every image (RLEs, label maps, AJI/PQ/Dice at score >= 0.5)
   + evaluate() (bbox and segm faster-coco-eval).

    python bench/bench_evaluation.py [--images 6] [--dets 2000] [--nuclei 400] [--size 1000]
"""
import argparse
import contextlib
import io
import logging
import platform
import time

import numpy as np
import pycocotools.mask as mask_util
import torch
from pycocotools.coco import COCO

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from d2_nucleus.evaluation import NucleusEvaluator, coco_average_precision, evaluate_coco
from d2_nucleus.utils.label_map import rles_to_label_map


def circle(cx, cy, r, n=24):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1).ravel().tolist()


def make_image(rng, size, num_nuclei, num_dets):
    grid = int(np.ceil(np.sqrt(num_nuclei)))
    step = size / grid
    gt = []
    for k in range(num_nuclei):
        r = rng.uniform(6, min(20, step / 2 - 2))
        jitter = step / 2 - r - 1
        cx = (k % grid + 0.5) * step + rng.uniform(-jitter, jitter)
        cy = (k // grid + 0.5) * step + rng.uniform(-jitter, jitter)
        gt.append((cx, cy, r))
    dets, scores = [], []
    for cx, cy, r in gt:
        if rng.random() < 0.9 and len(dets) < num_dets:
            dets.append((cx + rng.uniform(-3, 3), cy + rng.uniform(-3, 3), max(r + rng.uniform(-2, 2), 3)))
            scores.append(rng.uniform(0.3, 1.0))
    while len(dets) < num_dets:
        if rng.random() < 0.3:  # duplicate of a nucleus
            cx, cy, r = gt[rng.integers(len(gt))]
            dets.append((cx + rng.uniform(-6, 6), cy + rng.uniform(-6, 6), r))
        else:
            dets.append((rng.uniform(0, size), rng.uniform(0, size), rng.uniform(5, 20)))
        scores.append(rng.uniform(0.0, 0.6))

    def rles(circles):
        out = mask_util.frPyObjects([circle(*c) for c in circles], size, size)
        for r in out:
            r["counts"] = r["counts"].decode("ascii")
        return out

    return rles(gt), rles(dets), np.asarray(scores)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--dets", type=int, default=2000, help="detections per image")
    ap.add_argument("--nuclei", type=int, default=400, help="ground-truth nuclei per image")
    ap.add_argument("--size", type=int, default=1000, help="image side in pixels")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the fast measurements")
    args = ap.parse_args()
    logging.disable(logging.INFO)

    rng = np.random.default_rng(0)
    data = [make_image(rng, args.size, args.nuclei, args.dets) for _ in range(args.images)]
    print(f"{args.images} images {args.size}x{args.size}, {args.nuclei} nuclei and {args.dets} "
          f"detections each; torch threads {torch.get_num_threads()}, {platform.python_version()}")

    # --- 1. COCOeval ------------------------------------------------------------------------------
    gt_dict = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "nucleus"}]}
    results = []
    for i, (gt, dets, scores) in enumerate(data):
        gt_dict["images"].append({"id": i + 1, "height": args.size, "width": args.size})
        for g in gt:
            gt_dict["annotations"].append({
                "id": len(gt_dict["annotations"]) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                "segmentation": g, "area": float(mask_util.area(g)), "bbox": mask_util.toBbox(g).tolist(),
            })
        for d, s in zip(dets, scores):
            results.append({"image_id": i + 1, "category_id": 1, "segmentation": d, "score": float(s)})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt_dict
        coco_gt.createIndex()

    def run(fast):
        t = time.perf_counter()
        e = evaluate_coco(coco_gt, results, "segm", [100, args.dets], use_fast_impl=fast)
        return time.perf_counter() - t, e

    fast_times, slow_times = [], []
    for _ in range(args.repeats):
        dt, e_fast = run(True)
        fast_times.append(dt)
    dt, e_slow = run(False)
    slow_times.append(dt)
    diff = np.abs(e_fast.eval["precision"] - e_slow.eval["precision"]).max()
    print("\n1. COCO segm evaluate + accumulate, maxDets [100, %d]" % args.dets)
    print(f"   pycocotools COCOeval : {min(slow_times):8.2f} s")
    print(f"   faster-coco-eval     : {min(fast_times):8.2f} s   ({min(slow_times) / min(fast_times):.1f}x faster)")
    print(f"   max |precision difference| = {diff:.3g}")
    for name, iou, md in (("AP", None, args.dets), ("AP50", 0.5, args.dets), ("AP50@100", 0.5, 100)):
        a = coco_average_precision(e_fast, iou, "all", md) * 100
        b = coco_average_precision(e_slow, iou, "all", md) * 100
        print(f"   {name:9s} opt {a:.6f}  pycocotools {b:.6f}")

    # --- 2. label maps ----------------------------------------------------------------------------
    gt, dets, scores = data[0]
    paint = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        ours = rles_to_label_map(dets, args.size, args.size, scores)
        paint.append(time.perf_counter() - t)
    t = time.perf_counter()
    ref = np.zeros((args.size, args.size), np.int32)
    for i in np.argsort(-scores, kind="stable"):  # highest score first, paint free pixels
        x, y, w, h = (int(v) for v in np.round(mask_util.toBbox(dets[i])))
        m = mask_util.decode(dets[i])[y:y + h, x:x + w].astype(bool)  # paint in the box only
        sub = ref[y:y + h, x:x + w]
        sub[m & (sub == 0)] = i + 1
    decode = time.perf_counter() - t
    print(f"\n2. label map of {len(dets)} detections (one image)")
    print(f"   pycocotools decode + paint in box : {decode:8.3f} s")
    print(f"   rles_to_label_map                 : {min(paint):8.3f} s   ({decode / min(paint):.1f}x faster); "
          f"identical: {bool((ours == ref).all())}")

    # --- 3. NucleusEvaluator ----------------------------------------------------------------------
    name = "bench_nucleus_eval"
    dicts = []
    for i, (gt, _, _) in enumerate(data):
        anns = [{"bbox": mask_util.toBbox(g).tolist(), "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0,
                 "segmentation": g} for g in gt]
        dicts.append({"file_name": f"{i}.png", "image_id": i + 1, "height": args.size, "width": args.size,
                      "annotations": anns})
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["nucleus"])
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        ev = NucleusEvaluator(name, distributed=False, max_dets_per_image=args.dets)
        ev.reset()
        for i, (_, dets, scores) in enumerate(data):
            inst = Instances((args.size, args.size))
            boxes = BoxMode.convert(mask_util.toBbox(dets), BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
            inst.pred_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32))
            inst.scores = torch.as_tensor(scores, dtype=torch.float32)
            inst.pred_classes = torch.zeros(len(dets), dtype=torch.int64)
            inst.pred_rles = dets
            ev.process([{"image_id": i + 1, "height": args.size, "width": args.size}], [{"instances": inst}])
        res = ev.evaluate()
        times.append(time.perf_counter() - t)
    print(f"\n3. NucleusEvaluator (construct + process {args.images} images + evaluate bbox & segm)")
    print(f"   {min(times):8.2f} s; segm AP {res['segm']['AP']:.3f}, AP50@100 {res['segm']['AP50@100']:.3f}, "
          f"AJI {res['nucleus']['AJI']:.4f}, PQ {res['nucleus']['PQ']:.4f}")


if __name__ == "__main__":
    main()
