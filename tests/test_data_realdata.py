"""
Integration on the real raw dataset ($D2_NUCLEUS_RAW_DATA; skipped when unset): the whole dataset is
prepared once, then every nucleus is checked to round-trip pixel-exactly against OpenCV's decoding
of its mask PNG.
"""
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest

from d2_nucleus.data.mask2coco import default_workers, masks_to_coco
from d2_nucleus.data.raw import scan_train

pytestmark = pytest.mark.realdata


def _load(out, split):
    with open(os.path.join(out, "annotations", f"instance_{split}.json")) as f:
        return json.load(f)


def test_real_dataset_facts(real_raw, real_prepared):
    out, report = real_prepared
    coco = _load(out, "all_train")
    assert len(coco["images"]) == 24 and len(coco["annotations"]) == 14598
    assert report.nuclei == 14598 and not report.skipped
    kinds = report.warning_counts()
    assert not kinds.get("overlap") and not kinds.get("empty mask") and not kinds.get("non-binary")
    train, val = _load(out, "train"), _load(out, "val")
    assert len(train["images"]) == 19 and len(val["images"]) == 5
    assert len(train["annotations"]) + len(val["annotations"]) == 14598
    test = _load(out, "test")
    with open(os.path.join(real_raw, "test_img_ids.json")) as f:
        listed = json.load(f)
    assert [(i["file_name"], i["id"]) for i in test["images"]] == [(e["file_name"], e["id"]) for e in listed]
    assert sorted(os.listdir(os.path.join(out, "nucleus_data", "test"))) == sorted(e["file_name"] for e in listed)


def _check_image(args):
    """Worker: the annotations of one image against cv2.imread of its mask files; mismatching files."""
    mask_files, annotations = args
    bad = []
    for path, ann in zip(mask_files, annotations):
        src = cv2.imread(path, cv2.IMREAD_GRAYSCALE)  # the real masks are {0, 255}: no thresholding needed
        x, y, w, h = cv2.boundingRect(src)  # of the non-zero pixels
        area = cv2.countNonZero(src)
        decoded = mask_util.decode(ann["segmentation"])
        # Equal inside the box, and both have exactly `area` pixels: equal everywhere.
        ok = (
            ann["bbox"] == [x, y, w, h]
            and ann["area"] == area
            and int(mask_util.area(ann["segmentation"])) == area
            and np.array_equal(decoded[y : y + h, x : x + w], (src[y : y + h, x : x + w] > 0).astype(np.uint8))
        )
        if not ok:
            bad.append(path)
    return bad


def test_real_every_nucleus_round_trips_exactly(real_raw, real_prepared):
    out, _ = real_prepared
    coco = _load(out, "all_train")
    images = scan_train(real_raw).images
    by_image = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    jobs = []
    for img, entry in zip(images, coco["images"]):
        assert entry["file_name"] == img.image_id + ".png"
        anns = by_image[entry["id"]]
        assert len(anns) == len(img.mask_files)
        jobs.append((img.mask_files, anns))
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=default_workers(), mp_context=ctx) as pool:
        bad = [p for result in pool.map(_check_image, jobs) for p in result]
    assert bad == []


def test_real_polygon_mode_iou(real_raw):
    images = scan_train(real_raw).images[:2]
    coco, report = masks_to_coco(images, fmt="polygon", progress=False)
    sources = [p for r in images for p in r.mask_files]
    assert len(coco["annotations"]) == len(sources) - sum(report.skipped.values())
    ious = []
    for ann, path in zip(coco["annotations"], sources):
        h, w = 1000, 1000
        poly = mask_util.merge(mask_util.frPyObjects(ann["segmentation"], h, w))
        src = mask_util.encode(np.asfortranarray((cv2.imread(path, cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint8)))
        ious.append(mask_util.iou([poly], [src], [0])[0, 0])
    mean = float(np.mean(ious))
    print(f"polygon mode: mean IoU to the source masks {mean:.4f} over {len(ious)} nuclei (2 images)")
    assert mean > 0.85  # measured 0.877: imantics contours run through pixel centres
