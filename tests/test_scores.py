# -*- coding: utf-8 -*-
"""Detection scores: the float32 box predictor under bf16 autocast (MODEL.ROI_BOX_HEAD.FLOAT32_PREDICTOR)
and maskness rescoring (TEST.MASKNESS_POWER)."""
import copy
import os

import numpy as np
import pytest
import torch

from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.roi_heads import FastRCNNOutputLayers
from detectron2.structures import Boxes, Instances

from d2_nucleus.config import get_nucleus_cfg
from d2_nucleus.modeling import convert_box_predictors, maskness, maskness_rescore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "Base-Nucleus-RCNN-FPN.yaml")
TINY = [
    "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.FPN.OUT_CHANNELS", "64",
    "MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "GN", "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "300", "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "30",
]


def _predictor():
    torch.manual_seed(0)
    return FastRCNNOutputLayers(ShapeSpec(channels=64), box2box_transform=Box2BoxTransform((10, 10, 5, 5)),
                                num_classes=1, test_score_thresh=0.0)


def test_float32_box_predictor_scores_are_not_bf16():
    ref = _predictor()
    ours = copy.deepcopy(ref)
    assert convert_box_predictors(torch.nn.Module()) == 0
    holder = torch.nn.Module()
    holder.box_predictor = ours
    assert convert_box_predictors(holder) == 1 and convert_box_predictors(holder) == 0  # once
    assert isinstance(ours, FastRCNNOutputLayers) and list(ours.state_dict()) == list(ref.state_dict())
    x = torch.randn(400, 64) * 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits_ref, deltas_ref = ref(x.bfloat16())
        logits, deltas = ours(x.bfloat16())
    assert logits_ref.dtype == torch.bfloat16 and logits.dtype == deltas.dtype == torch.float32
    with torch.no_grad():
        exact = ours.cls_score(x.bfloat16().float())
    torch.testing.assert_close(logits, exact)
    probs = torch.softmax(logits, -1)[:, 0]
    probs_ref = torch.softmax(logits_ref, -1)[:, 0]
    # bf16 scores: ties everywhere; float32: (almost) every detection has its own score
    assert len(torch.unique(probs_ref)) < 150 and len(torch.unique(probs)) > 390
    copy.deepcopy(ours)  # models are deep-copied (e.g. by the TTA wrapper's users)


def test_model_config_switch():
    on = build_model(get_nucleus_cfg(CONFIG, TINY))
    off = build_model(get_nucleus_cfg(CONFIG, TINY + ["MODEL.ROI_BOX_HEAD.FLOAT32_PREDICTOR", "False"]))
    assert getattr(on.roi_heads.box_predictor, "runs_in_float32", False)
    assert not getattr(off.roi_heads.box_predictor, "runs_in_float32", False)
    assert list(on.state_dict()) == list(off.state_dict())


def test_maskness_values():
    probs = torch.zeros(3, 1, 4, 4)
    probs[0, 0, :2, :2] = 0.9  # 4 pixels at 0.9, the rest 0
    probs[1, 0] = 0.6
    probs[1, 0, 0, 0] = 1.0
    probs[2, 0] = 0.4  # nothing above the threshold
    m = maskness(probs, 0.5)
    torch.testing.assert_close(m, torch.tensor([0.9, (0.6 * 15 + 1.0) / 16, 0.0]))
    torch.testing.assert_close(maskness(probs[:, 0], 0.3)[2], torch.tensor(0.4))
    with pytest.raises(ValueError):
        maskness(torch.zeros(4, 4))


def test_maskness_rescore():
    inst = Instances((10, 10), pred_boxes=Boxes(torch.zeros(2, 4)), scores=torch.tensor([0.9, 0.8]))
    probs = torch.full((2, 1, 3, 3), 0.5)
    probs[1] = 1.0
    inst.pred_masks = probs
    plain = Instances((10, 10), scores=torch.tensor([0.7]))  # no masks: unchanged
    maskness_rescore([inst, plain], 0.5, power=2.0)
    torch.testing.assert_close(inst.scores, torch.tensor([0.9 * 0.25, 0.8]))
    torch.testing.assert_close(inst.cls_scores, torch.tensor([0.9, 0.8]))
    torch.testing.assert_close(inst.pred_maskness, torch.tensor([0.5, 1.0]))
    assert plain.scores.tolist() == pytest.approx([0.7]) and not plain.has("cls_scores")
    same = Instances((10, 10), scores=torch.tensor([0.9]), pred_masks=probs[:1])
    maskness_rescore([same], 0.5, power=0.0)
    assert same.scores.tolist() == pytest.approx([0.9]) and not same.has("pred_maskness")
    with pytest.raises(ValueError):
        maskness_rescore([same], 0.5, power=-1)


def test_model_rescores_with_maskness():
    """TEST.MASKNESS_POWER on a model: the scores are the class scores times maskness."""
    torch.manual_seed(0)
    cfg = get_nucleus_cfg(CONFIG, TINY + ["TEST.MASKNESS_POWER", "1.0"])
    model = build_model(cfg).eval()
    image = torch.from_numpy((np.random.default_rng(0).random((3, 96, 96)) * 255).astype(np.float32))
    with torch.no_grad():
        out = model.inference([{"image": image, "height": 96, "width": 96}])[0]["instances"]
    assert len(out) > 0 and out.has("pred_maskness") and out.has("pred_rles")
    torch.testing.assert_close(out.scores, out.cls_scores * out.pred_maskness)
