# -*- coding: utf-8 -*-
"""Mask Scoring R-CNN: IoU targets, the MaskIoU head's training and rescoring at inference."""
import numpy as np
import pytest
import torch

from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

from d2_nucleus.config import add_all_config, merge_config_file
from d2_nucleus.data.synthetic import render_nuclei_image
from d2_nucleus.modeling.mask_scoring import (
    MaskIoUHead,
    MaskScoringROIHeads,
    build_maskiou_head,
    maskiou_targets,
)

SIZE = 128
TINY = [
    "MODEL.META_ARCHITECTURE", "GeneralizedRCNN",
    "MODEL.ROI_HEADS.NAME", "MaskScoringROIHeads",
    "MODEL.MASKIOU_ON", True,
    "MODEL.WEIGHTS", "",
    "MODEL.DEVICE", "cpu",
    "MODEL.RESNETS.DEPTH", 18,
    "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
    "MODEL.RESNETS.NORM", "GN",
    "MODEL.RESNETS.STRIDE_IN_1X1", False,
    "MODEL.BACKBONE.FREEZE_AT", 0,
    "MODEL.FPN.OUT_CHANNELS", 32,
    "MODEL.FPN.NORM", "GN",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 1000,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", 200,
    "MODEL.RPN.PRE_NMS_TOPK_TEST", 1000,
    "MODEL.RPN.POST_NMS_TOPK_TEST", 300,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64,
    "MODEL.ROI_BOX_HEAD.FC_DIM", 64,
    "MODEL.ROI_MASK_HEAD.CONV_DIM", 32,
    "MODEL.ROI_MASK_HEAD.NUM_CONV", 2,
    "MODEL.ROI_MASKIOU_HEAD.CONV_DIM", 32,
    "MODEL.ROI_MASKIOU_HEAD.FC_DIM", 64,
    "TEST.DETECTIONS_PER_IMAGE", 200,
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread is faster than several competing for a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cfg(*opts):
    cfg = get_cfg()
    add_all_config(cfg)
    merge_config_file(cfg, "configs/Base-Nucleus-RCNN-FPN.yaml")
    cfg.merge_from_list(TINY + list(opts))
    return cfg


def _sample(seed=0, polygons=False):
    rng = np.random.default_rng(seed)
    rgb, labels = render_nuclei_image(rng, SIZE, SIZE, 12)
    ids = [k for k in np.unique(labels) if k]
    masks = np.stack([labels == k for k in ids])
    inst = Instances((SIZE, SIZE))
    bitmasks = BitMasks(torch.as_tensor(masks))
    inst.gt_boxes = bitmasks.get_bounding_boxes()
    inst.gt_classes = torch.zeros(len(ids), dtype=torch.int64)
    if polygons:
        polys = []
        for b in inst.gt_boxes.tensor.tolist():  # box-shaped polygons: enough for a smoke test
            x0, y0, x1, y1 = b
            polys.append([[x0, y0, x1, y0, x1, y1, x0, y1]])
        inst.gt_masks = PolygonMasks(polys)
    else:
        inst.gt_masks = bitmasks
    image = torch.as_tensor(np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1)).astype(np.float32))
    return {"image": image, "instances": inst, "height": SIZE, "width": SIZE, "image_id": seed}


# -------------------------------------------------------------------------------------------------
def _proposals(boxes, gt_mask, full_area):
    inst = Instances((20, 20))
    inst.proposal_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    n = len(boxes)
    inst.gt_masks = BitMasks(torch.as_tensor(np.stack([gt_mask] * n)))
    inst.gt_mask_areas = torch.full((n,), float(full_area))
    inst.gt_classes = torch.zeros(n, dtype=torch.int64)
    return inst


def test_maskiou_targets_hand_computed():
    gt = np.ones((20, 20), bool)  # the whole image: 400 px, no rasterisation error at box edges
    inst = _proposals([[0, 0, 20, 20], [0, 0, 10, 20], [0, 0, 10, 10], [0, 0, 20, 20]], gt, 400)
    probs = torch.ones(4, 1, 28, 28)
    probs[3, :, :, 14:] = 0.2  # left half of the box only
    t = maskiou_targets(probs, [inst])
    # box = GT, full mask: 1. A box over the left half (200 px): the mask covers 200 of the
    # GT's 400 px -> 0.5, the GT outside the box counts in the union. A 10x10 box: 100 / 400.
    # Half a mask in the full box: 0.5.
    assert t.tolist() == pytest.approx([1.0, 0.5, 0.25, 0.5], abs=1e-6)
    # nothing predicted -> 0
    assert maskiou_targets(torch.zeros(4, 1, 28, 28), [inst]).tolist() == [0.0] * 4


def test_maskiou_head_shapes():
    cfg = _cfg()
    head = build_maskiou_head(cfg, ShapeSpec(channels=32, height=14, width=14))
    assert isinstance(head, MaskIoUHead)
    out = head.layers(torch.randn(5, 32, 14, 14), torch.rand(5, 1, 28, 28))
    assert out.shape == (5, cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    assert len(head.convs) == cfg.MODEL.ROI_MASKIOU_HEAD.NUM_CONV
    assert head.convs[-1].stride == (2, 2) and head.convs[0].stride == (1, 1)


def test_maskiou_off_is_standard_roi_heads():
    torch.manual_seed(0)
    model = build_model(_cfg("MODEL.MASKIOU_ON", False))
    assert isinstance(model.roi_heads, MaskScoringROIHeads) and not hasattr(model.roi_heads, "maskiou_head")
    model.train()
    with EventStorage():
        losses = model([_sample()])
    assert "loss_maskiou" not in losses and "loss_mask" in losses


def test_train_step_with_polygons():
    torch.manual_seed(0)
    model = build_model(_cfg("INPUT.MASK_FORMAT", "polygon"))
    model.train()
    with EventStorage():
        losses = model([_sample(polygons=True)])
    assert torch.isfinite(losses["loss_maskiou"]) and losses["loss_maskiou"] > 0
    losses["loss_maskiou"].backward()
    assert model.roi_heads.maskiou_head.predictor.weight.grad is not None
    # the mask prediction fed to the MaskIoU head is detached: loss_maskiou alone does not
    # reach the mask predictor
    assert model.roi_heads.mask_head.predictor.weight.grad is None


def test_overfit_loss_falls_and_inference_rescores():
    torch.manual_seed(0)
    cfg = _cfg()
    model = build_model(cfg)
    model.train()
    sample = _sample(seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    with EventStorage() as storage:
        for it in range(30):
            storage.iter = it
            losses = model([sample])
            loss = sum(losses.values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append(losses["loss_maskiou"].item())
    assert np.mean(history[-5:]) < np.mean(history[:5]), history

    model.eval()
    with torch.no_grad():
        out = model([{k: sample[k] for k in ("image", "height", "width")}])[0]["instances"]
    assert len(out) > 0
    assert out.has("cls_scores") and out.has("pred_maskiou")
    assert torch.allclose(out.scores, out.cls_scores * out.pred_maskiou)
    assert ((out.pred_maskiou >= 0) & (out.pred_maskiou <= 1)).all()
    assert not torch.allclose(out.scores, out.cls_scores)


def test_no_ground_truth_and_no_detections():
    torch.manual_seed(0)
    model = build_model(_cfg("MODEL.ROI_HEADS.SCORE_THRESH_TEST", 1.0))
    model.train()
    sample = _sample()
    empty = Instances((SIZE, SIZE))
    empty.gt_boxes = Boxes(torch.zeros(0, 4))
    empty.gt_classes = torch.zeros(0, dtype=torch.int64)
    empty.gt_masks = BitMasks(torch.zeros(0, SIZE, SIZE, dtype=torch.bool))
    with EventStorage():
        losses = model([dict(sample, instances=empty)])
    assert losses["loss_maskiou"].item() == 0
    model.eval()
    with torch.no_grad():
        out = model([{k: sample[k] for k in ("image", "height", "width")}])[0]["instances"]
    assert len(out) == 0 and out.has("pred_maskiou")


def test_rescoring_survives_nucleus_rcnn_postprocess():
    pytest.importorskip("d2_nucleus.modeling.meta_arch")
    import d2_nucleus.modeling  # noqa: F401  (registers NucleusRCNN)

    torch.manual_seed(0)
    model = build_model(_cfg("MODEL.META_ARCHITECTURE", "NucleusRCNN", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0))
    model.eval()
    sample = _sample()
    with torch.no_grad():
        out = model([{k: sample[k] for k in ("image", "height", "width")}])[0]["instances"]
    assert len(out) > 0 and out.has("pred_rles")
    assert torch.allclose(out.scores, out.cls_scores * out.pred_maskiou)
