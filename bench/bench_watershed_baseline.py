#!/usr/bin/env python
"""
A classical reference for the learned models: colour deconvolution -> Otsu threshold of the
haematoxylin channel -> distance-transform marker watershed (OpenCV), scored by the same
NucleusEvaluator (dense COCO AP, the challenge AP50@100, AJI, PQ) on a registered dataset.

    python bench/bench_watershed_baseline.py --data-root PREPARED [--dataset nucleus_val]

Each nucleus gets the score of its mean distance-transform peak height (larger, rounder nuclei
first), so that AP's ranking has something to rank by.
"""
import argparse
import time

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import DatasetCatalog
from detectron2.structures import Boxes, Instances

from d2_nucleus.config import get_nucleus_cfg
from d2_nucleus.data import register_nucleus_datasets
from d2_nucleus.data.transforms import _HED_FROM_RGB
from d2_nucleus.evaluation import NucleusEvaluator


def watershed_instances(bgr: np.ndarray, min_area: int = 30) -> Instances:
    rgb = bgr[..., ::-1].astype(np.float32)
    od = -np.log(np.maximum(rgb, 1.0) / 255.0)
    h = (od.reshape(-1, 3) @ _HED_FROM_RGB)[:, 0].reshape(bgr.shape[:2])
    h8 = cv2.normalize(h, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    h8 = cv2.GaussianBlur(h8, (5, 5), 0)
    _, fg = cv2.threshold(h8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, kernel, iterations=2)
    dist = cv2.distanceTransform(fg, cv2.DIST_L2, 5)
    peaks = (dist == cv2.dilate(dist, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9)))) & (dist > 2)
    n, markers = cv2.connectedComponents(peaks.astype(np.uint8))
    markers = markers + 1
    markers[(fg > 0) & (markers == 1)] = 0  # unknown region, to be flooded
    markers = cv2.watershed(bgr.copy(), markers.astype(np.int32))
    rles, boxes, scores = [], [], []
    for k in range(2, n + 1):
        m = markers == k
        area = int(m.sum())
        if area < min_area:
            continue
        rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode()
        x, y, w, hh = mask_util.toBbox(rle)
        rles.append(rle)
        boxes.append([x, y, x + w, y + hh])
        scores.append(float(dist[m].max()))
    inst = Instances(bgr.shape[:2])
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    s = np.asarray(scores, np.float32)
    inst.scores = torch.from_numpy(s / max(float(s.max()), 1.0) if len(s) else s)
    inst.pred_classes = torch.zeros(len(rles), dtype=torch.int64)
    inst.pred_rles = rles
    return inst


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True, help="prepared data root (tools/prepare_data.py --out)")
    p.add_argument("--dataset", default="nucleus_val")
    args = p.parse_args()
    cfg = get_nucleus_cfg(None, ["MODEL.DEVICE", "cpu"], data_root=args.data_root)
    register_nucleus_datasets(cfg=cfg)
    evaluator = NucleusEvaluator.from_config(cfg, args.dataset, distributed=False)
    evaluator.reset()
    t0 = time.perf_counter()
    for d in DatasetCatalog.get(args.dataset):
        inst = watershed_instances(cv2.imread(d["file_name"], cv2.IMREAD_COLOR))
        evaluator.process([d], [{"instances": inst}])
    seconds = time.perf_counter() - t0
    res = evaluator.evaluate()
    print(f"watershed on {args.dataset}: {seconds:.1f} s")
    print(f"segm AP50@100 {res['segm']['AP50@100']:.2f}  AP50 {res['segm']['AP50']:.2f}  AP {res['segm']['AP']:.2f}  "
          f"AJI {res['nucleus']['AJI']:.4f}  PQ {res['nucleus']['PQ']:.4f}  Dice {res['nucleus']['Dice']:.4f}")


if __name__ == "__main__":
    main()
