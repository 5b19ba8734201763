"""NucleusDatasetMapper and the H&E augmentations."""
import os
import random

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from d2_nucleus.config import get_nucleus_cfg
from d2_nucleus.data.dataset_mapper import NucleusDatasetMapper, dense_label_map
from d2_nucleus.data.synthetic import render_nuclei_image
from d2_nucleus.data.transforms import RelativeResize, Rot90Transform, StainJitterTransform

BASE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                    "Base-Nucleus-RCNN-FPN.yaml")


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    img, lab = render_nuclei_image(np.random.default_rng(0), 300, 280, 120)
    f = str(tmp_path_factory.mktemp("mapper") / "a.png")
    cv2.imwrite(f, img[..., ::-1])
    annos = []
    for k in range(1, lab.max() + 1):
        r = mask_util.encode(np.asfortranarray((lab == k).astype(np.uint8)))
        r["counts"] = r["counts"].decode()
        annos.append({"bbox": mask_util.toBbox(r).tolist(), "bbox_mode": BoxMode.XYWH_ABS,
                      "segmentation": r, "category_id": 0, "iscrowd": 0})
    return {"file_name": f, "height": 300, "width": 280, "image_id": 1, "annotations": annos}


def _cfg():
    return get_nucleus_cfg(BASE, ["INPUT.CROP.SIZE", "[200, 160]", "INPUT.MIN_SIZE_TRAIN", "(150, 190, 260)"])


def test_label_map_path_equals_per_annotation_path(record):
    cfg = _cfg()
    fast = NucleusDatasetMapper(cfg, True)
    slow = NucleusDatasetMapper(cfg, True)
    slow._label_map = lambda *a: None  # force Detectron2's per-annotation transforms
    for seed in range(12):  # crops, scales, flips and rotations
        np.random.seed(seed), random.seed(seed)
        a = fast(record)
        np.random.seed(seed), random.seed(seed)
        b = slow(record)
        assert torch.equal(a["image"], b["image"])
        ia, ib = a["instances"], b["instances"]
        assert len(ia) == len(ib) > 0
        key = lambda m: m.numpy().tobytes()  # noqa: E731
        assert sorted(map(key, ia.gt_masks.tensor)) == sorted(map(key, ib.gt_masks.tensor))
        # boxes are the masks' tight boxes
        assert torch.equal(ia.gt_boxes.tensor, ia.gt_masks.get_bounding_boxes().tensor)
    assert "annotations" in record and len(record["annotations"]) == 120  # input not modified


def _same_instances(a, b):
    """Equal images and the same set of (mask, box, class) instances, in any order."""
    assert torch.equal(a["image"], b["image"])
    ia, ib = a["instances"], b["instances"]
    assert len(ia) == len(ib) > 0

    def rows(inst):
        return sorted(
            (m.numpy().tobytes(), tuple(box.tolist()), int(c))
            for m, box, c in zip(inst.gt_masks.tensor, inst.gt_boxes.tensor, inst.gt_classes)
        )

    assert rows(ia) == rows(ib)


def test_more_than_255_nuclei(tmp_path):
    """Real images hold 294-1862 nuclei: the label-map path must take them (pycocotools' area()
    overflowed a uint8 for lists of more than 255 RLEs under numpy 2)."""
    img, lab = render_nuclei_image(np.random.default_rng(3), 400, 400, 300, min_diameter=6, max_diameter=16)
    assert lab.max() == 300
    f = str(tmp_path / "many.png")
    cv2.imwrite(f, img[..., ::-1])
    annos = []
    for k in range(1, 301):
        r = mask_util.encode(np.asfortranarray((lab == k).astype(np.uint8)))
        annos.append({"bbox": mask_util.toBbox(r).tolist(), "bbox_mode": BoxMode.XYWH_ABS,
                      "segmentation": r, "category_id": 0, "iscrowd": 0})
    rec = {"file_name": f, "height": 400, "width": 400, "image_id": 7, "annotations": annos}
    labels = dense_label_map(annos, 400, 400)
    assert labels is not None and np.array_equal(labels, lab)
    cfg = get_nucleus_cfg(BASE, ["INPUT.CROP.SIZE", "[256, 256]"])
    fast, slow = NucleusDatasetMapper(cfg, True), NucleusDatasetMapper(cfg, True)
    slow._label_map = lambda *a: None
    for seed in range(3):
        np.random.seed(seed), random.seed(seed)
        a = fast(rec)
        np.random.seed(seed), random.seed(seed)
        _same_instances(a, slow(rec))


def test_overlapping_annotations_fall_back(record):
    rec = dict(record)
    rec["annotations"] = record["annotations"] + [record["annotations"][0]]  # a duplicate overlaps
    mapper = NucleusDatasetMapper(_cfg(), True)
    assert mapper._label_map(rec, rec["annotations"]) is None
    np.random.seed(0)
    out = mapper(rec)
    assert len(out["instances"]) > 0


def test_test_mapper_is_native_resolution(record):
    out = NucleusDatasetMapper(_cfg(), False)(record)
    assert tuple(out["image"].shape) == (3, 300, 280) and "instances" not in out


def test_test_scale_is_relative_to_each_image(record):
    cfg = _cfg()
    cfg.INPUT.TEST_SCALE = 1.5
    out = NucleusDatasetMapper(cfg, False)(record)
    assert tuple(out["image"].shape) == (3, 450, 420)  # 300 x 280 image: x 1.5 on both sides
    assert (out["height"], out["width"]) == (300, 280)  # outputs stay in the image's pixels
    cfg.INPUT.MAX_SIZE_TEST = 300  # the longer edge kept within MAX_SIZE_TEST
    assert tuple(NucleusDatasetMapper(cfg, False)(record)["image"].shape) == (3, 300, 280)


def test_relative_resize_equals_shortest_edge_on_square_images():
    img, _ = render_nuclei_image(np.random.default_rng(2), 200, 200, 30)
    a = RelativeResize(1.25).get_transform(img).apply_image(img)
    b = T.ResizeShortestEdge(250, 4000).get_transform(img).apply_image(img)
    assert a.shape == (250, 250, 3) and np.array_equal(a, b)
    with pytest.raises(ValueError, match="TEST_SCALE"):
        RelativeResize(0.0)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rot90_coords_follow_pixels(k):
    h, w = 7, 11
    img = np.zeros((h, w), np.uint8)
    img[1, 2] = 1  # pixel (x=2, y=1): its box [2, 1, 3, 2]
    t = Rot90Transform(h, w, k)
    out = t.apply_image(img)
    ys, xs = np.nonzero(out)
    box = t.apply_box(np.array([[2.0, 1.0, 3.0, 2.0]]))[0]
    assert box.tolist() == [xs[0], ys[0], xs[0] + 1, ys[0] + 1]
    assert np.array_equal(t.inverse().apply_image(out), img)


def test_stain_jitter():
    img, _ = render_nuclei_image(np.random.default_rng(1), 64, 64, 10)
    same = StainJitterTransform(np.ones(3, np.float32), np.zeros(3, np.float32), "RGB").apply_image(img)
    assert np.abs(same.astype(int) - img).max() <= 1  # identity up to rounding
    t = StainJitterTransform(np.array([1.1, 0.9, 1.0], np.float32), np.array([0.05, 0, 0], np.float32), "RGB")
    out = t.apply_image(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img).mean() > 2
    seg = np.arange(12).reshape(3, 4)
    assert np.array_equal(t.apply_segmentation(seg), seg)
