# -*- coding: utf-8 -*-
"""
--eval-only and tools/predict.py share image decoding, the model's post-processing and the COCO
conversion: the same image files through both give the same detections, to the bit.
"""
import copy
import json
import os

import cv2
import numpy as np
import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog

from d2_nucleus.config import get_nucleus_cfg
from d2_nucleus.data import register_nucleus_datasets
from d2_nucleus.engine import NucleusPredictor, NucleusTrainer, run_prediction
from d2_nucleus.engine.inputs import ImageItem
from d2_nucleus.evaluation import NucleusEvaluator
from weights import save_untrained_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The demo model (R18-FPN, GroupNorm, 64 channels), random weights, every detection kept.
CONFIG = os.path.join(ROOT, "configs", "demo", "mask_rcnn_R_18_FPN_demo.yaml")
OPTS = ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "40",
        "MODEL.RPN.POST_NMS_TOPK_TEST", "100", "DATALOADER.NUM_WORKERS", "0"]
NAME = "parity_val"


@pytest.fixture
def dataset(synthetic_prepared, tmp_path):
    """The val images plus two re-encodings of the first one: RGBA, and 16-bit grey (which
    Detectron2's own reader would clip rather than scale)."""
    register_nucleus_datasets(synthetic_prepared)
    dicts = copy.deepcopy(DatasetCatalog.get("nucleus_val"))
    first = dicts[0]
    bgr = cv2.imread(first["file_name"])
    rgba = tmp_path / "rgba.png"
    cv2.imwrite(str(rgba), np.concatenate([bgr, np.full(bgr.shape[:2] + (1,), 255, np.uint8)], axis=2))
    grey16 = tmp_path / "grey16.png"
    cv2.imwrite(str(grey16), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257)
    next_id = max(d["image_id"] for d in dicts) + 1
    for k, path in enumerate((rgba, grey16)):
        dicts.append(dict(copy.deepcopy(first), file_name=str(path), image_id=next_id + k))
    DatasetCatalog.register(NAME, lambda: copy.deepcopy(dicts))
    MetadataCatalog.get(NAME).set(**{k: v for k, v in MetadataCatalog.get("nucleus_val").as_dict().items()
                                     if k != "name"})
    try:
        yield dicts
    finally:
        DatasetCatalog.remove(NAME)
        MetadataCatalog.remove(NAME)


@pytest.mark.parametrize("arch", ["NucleusRCNN", "GeneralizedRCNN"])
def test_eval_and_predict_give_the_same_detections(dataset, synthetic_prepared, tmp_path, arch):
    cfg = get_nucleus_cfg(CONFIG, OPTS + ["MODEL.META_ARCHITECTURE", arch, "MODEL.WEIGHTS", "",
                                               "DATASETS.TEST", f"('{NAME}',)"],
                          data_root=synthetic_prepared)
    cfg.MODEL.WEIGHTS = save_untrained_weights(cfg, tmp_path / "model.pth")

    # --eval-only: the test loader (NucleusDatasetMapper) -> model -> NucleusEvaluator
    model = NucleusTrainer.build_model(cfg)
    from d2_nucleus.checkpoint import NucleusCheckpointer

    NucleusCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    evaluator = NucleusEvaluator(NAME, cfg, distributed=False, output_dir=str(tmp_path / "eval"))
    NucleusTrainer.test(cfg, model, [evaluator])
    with open(tmp_path / "eval" / "coco_instances_results.json") as f:
        scored = json.load(f)

    # tools/predict.py: read_image -> NucleusPredictor -> answer.json
    items = [ImageItem(d["file_name"], d["image_id"], d["height"], d["width"]) for d in dataset]
    run_prediction(NucleusPredictor(cfg), items, output=str(tmp_path / "answer.json"), progress=False)
    with open(tmp_path / "answer.json") as f:
        submitted = json.load(f)

    assert scored and len(scored) == len(submitted)
    assert {r["image_id"] for r in scored} == {d["image_id"] for d in dataset}
    assert scored == submitted  # same order, masks, boxes and scores
    # the RGBA copy decodes to the same pixels as the original; the 16-bit grey one does not
    by_image = {i: [r for r in scored if r["image_id"] == i] for i in {r["image_id"] for r in scored}}
    first, rgba, grey = (d["image_id"] for d in (dataset[0], dataset[-2], dataset[-1]))
    assert by_image[rgba] == [dict(r, image_id=rgba) for r in by_image[first]]
    assert by_image[grey] != [dict(r, image_id=grey) for r in by_image[first]]
