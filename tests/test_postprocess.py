# -*- coding: utf-8 -*-
"""Memory-light post-processing: identical to Detectron2's detector_postprocess + encode."""
import copy

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from detectron2.modeling import GeneralizedRCNN, build_model
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances, ROIMasks

from d2_nucleus.config import get_nucleus_cfg
from d2_nucleus.modeling import (
    NucleusDatasetMapperTTA,
    NucleusRCNN,
    NucleusRCNNWithTTA,
    RLEList,
    nucleus_postprocess,
    paste_masks_to_rles,
)

CONFIG = "configs/Base-Nucleus-RCNN-FPN.yaml"
TINY_OPTS = [
    "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.FPN.OUT_CHANNELS", "64",
    "MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "GN", "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "300", "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "40", "TEST.MASK_HEAD_CHUNK_SIZE", "7",
]


def _encode(mask: torch.Tensor) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


def _random_instances(rng, n, image_hw, mask_size=28):
    """Raw R-CNN outputs: boxes partly outside the image, tiny and large boxes, empty and full masks."""
    h, w = image_hw
    cx, cy = rng.uniform(-20, w + 20, n), rng.uniform(-20, h + 20, n)
    bw = np.exp(rng.uniform(np.log(0.3), np.log(150), n))
    bh = np.exp(rng.uniform(np.log(0.3), np.log(150), n))
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).astype(np.float32)
    probs = torch.from_numpy(rng.normal(0, 3, (n, 1, mask_size, mask_size)).astype(np.float32)).sigmoid()
    if n > 0:
        probs[0] = 0.0  # empty mask
    if n > 1:
        probs[1] = 1.0  # full box
    inst = Instances((h, w))
    inst.pred_boxes = Boxes(torch.from_numpy(boxes))
    inst.scores = torch.from_numpy(rng.uniform(size=n).astype(np.float32))
    inst.pred_classes = torch.zeros(n, dtype=torch.int64)
    inst.pred_masks = probs
    return inst


def _assert_same(ref: Instances, ours: Instances):
    assert ours.image_size == ref.image_size
    assert len(ours) == len(ref)
    assert torch.equal(ours.pred_boxes.tensor, ref.pred_boxes.tensor)
    assert torch.equal(ours.scores, ref.scores)
    assert not ours.has("pred_masks")
    assert isinstance(ours.pred_rles, RLEList)
    for i in range(len(ref)):
        assert ours.pred_rles[i] == _encode(ref.pred_masks[i]), f"instance {i}"


@pytest.mark.parametrize("seed", range(6))
def test_equal_to_detectron2_random(seed):
    rng = np.random.default_rng(seed)
    for _ in range(10):
        n = int(rng.integers(0, 40))
        in_hw = (int(rng.integers(5, 160)), int(rng.integers(5, 160)))
        out_hw = in_hw if rng.uniform() < 0.5 else (int(rng.integers(5, 160)), int(rng.integers(5, 160)))
        mask_size = int(rng.choice([7, 28, 56]))
        threshold = float(rng.choice([0.5, 0.3, 0.9, 0.0, 1.0]))
        inst = _random_instances(rng, n, in_hw, mask_size)
        ref = detector_postprocess(copy.deepcopy(inst), *out_hw, mask_threshold=threshold)
        _assert_same(ref, nucleus_postprocess(inst, *out_hw, mask_threshold=threshold))


def test_equal_dense_1000px():
    """~2000 small detections on a 1000x1000 image (several chunks)."""
    rng = np.random.default_rng(0)
    n = 2000
    wh = rng.uniform(8, 60, (n, 2))
    xy = rng.uniform(0, 1000, (n, 2)) - wh / 2
    inst = Instances((1000, 1000))
    inst.pred_boxes = Boxes(torch.from_numpy(np.concatenate([xy, xy + wh], 1).astype(np.float32)))
    inst.scores = torch.rand(n)
    inst.pred_masks = torch.from_numpy(rng.normal(0, 3, (n, 1, 28, 28)).astype(np.float32)).sigmoid()
    ours = nucleus_postprocess(inst, 1000, 1000)
    # compare a random sample against the naive path (all 2000 full-size masks would take 2 GB)
    idx = torch.from_numpy(rng.choice(n, 150, replace=False))
    sub = inst[idx]
    ref = detector_postprocess(copy.deepcopy(sub), 1000, 1000)
    assert [ours.pred_rles[int(i)] for i in idx] == [_encode(m) for m in ref.pred_masks]


def test_runs_across_columns_and_image_edges():
    """Full-height boxes (runs joined from one column to the next), boxes at every image edge."""
    h, w = 20, 30
    boxes = torch.tensor(
        [[0, 0, 30, 20], [0, 0, 5, 20], [25, 0, 30, 20], [0, 15, 30, 20], [-3, -3, 2.5, 2.5], [28.2, 18.7, 31, 22]],
        dtype=torch.float32,
    )
    inst = Instances((h, w))
    inst.pred_boxes = Boxes(boxes)
    inst.scores = torch.ones(len(boxes))
    inst.pred_masks = torch.ones(len(boxes), 1, 28, 28)
    inst.pred_masks[0, 0, 10:] = 0.0
    ref = detector_postprocess(copy.deepcopy(inst), h, w)
    _assert_same(ref, nucleus_postprocess(inst, h, w))
    assert mask_util.area(nucleus_postprocess(inst, h, w).pred_rles[2]) > 0


def test_roimasks_keypoints_and_extra_fields():
    rng = np.random.default_rng(1)
    inst = _random_instances(rng, 12, (64, 80))
    inst.pred_masks = ROIMasks(inst.pred_masks[:, 0])
    inst.pred_maskiou = torch.rand(12)
    ref = detector_postprocess(copy.deepcopy(inst), 128, 160)
    ours = nucleus_postprocess(inst, 128, 160)
    _assert_same(ref, ours)
    assert torch.equal(ours.pred_maskiou, ref.pred_maskiou)
    assert isinstance(inst.pred_masks, ROIMasks) and inst.image_size == (64, 80)  # input untouched


def test_empty_and_invalid():
    inst = _random_instances(np.random.default_rng(0), 0, (10, 10))
    out = nucleus_postprocess(inst, 10, 10)
    assert len(out) == 0 and list(out.pred_rles) == []
    with pytest.raises(ValueError, match="threshold"):
        paste_masks_to_rles(torch.zeros(1, 28, 28), torch.tensor([[0, 0, 5, 5.0]]), (10, 10), threshold=-1)


def test_rle_list_indexing():
    rles = RLEList({"size": [1, 1], "counts": str(i)} for i in range(5))
    assert rles[torch.tensor([True, False, True, False, False])] == [rles[0], rles[2]]
    assert rles[torch.tensor([4, 1])] == [rles[4], rles[1]]
    assert isinstance(rles[1:3], RLEList) and rles[np.int64(3)] == rles[3]
    inst = Instances((1, 1), scores=torch.arange(5.0), pred_rles=rles)
    sub = inst[inst.scores > 2]
    assert [r["counts"] for r in sub.pred_rles] == ["3", "4"]
    assert len(Instances.cat([sub, sub]).pred_rles) == 4


# -------------------------------------------------------------------------------------------------
# NucleusRCNN and TTA on a tiny random model
# -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    cfg = get_nucleus_cfg(CONFIG, TINY_OPTS)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert isinstance(model, NucleusRCNN)
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 255, (3, 96, 128), dtype=np.uint8))
    return cfg, model, image


def test_nucleus_rcnn_matches_generalized_rcnn(tiny):
    cfg, model, image = tiny
    inputs = [{"image": image, "height": 192, "width": 256}]  # outputs at 2x the network input
    with torch.no_grad():
        raw = model.inference(inputs, do_postprocess=False)[0]
        ours = model(inputs)[0]["instances"]
    ref = detector_postprocess(copy.deepcopy(raw), 192, 256)
    assert len(raw) > 7  # several mask-head chunks
    assert len(ours) > 0
    assert ours.pred_boxes.tensor.device.type == "cpu"
    assert set(ours.get_fields()) == {"pred_boxes", "scores", "pred_classes", "pred_rles"}
    _assert_same(ref, ours)


def test_mask_head_chunks_equal_detectron2(tiny):
    """Chunked mask head (TEST.MASK_HEAD_CHUNK_SIZE) = Detectron2's all-at-once inference."""
    cfg, model, image = tiny
    inputs = [{"image": image}, {"image": image[:, :64, :80]}]
    with torch.no_grad():
        ours = model.inference(inputs, do_postprocess=False)
        ref = GeneralizedRCNN.inference(model, inputs, do_postprocess=False)
    for a, b in zip(ours, ref):
        assert len(a) == len(b) > 0
        assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)
        torch.testing.assert_close(a.pred_masks, b.pred_masks, rtol=0, atol=1e-6)


def test_tta_mapper_sizes(tiny):
    cfg, _, image = tiny
    d = {"image": image, "height": 96, "width": 128}
    mapper = NucleusDatasetMapperTTA(cfg)  # default: native, h/v flips
    out = mapper(d)
    assert len(out) == 4 and all(tuple(o["image"].shape) == (3, 96, 128) for o in out)
    cfg = cfg.clone()
    cfg.TEST.AUG.SCALES = (0.5, 1.0)
    cfg.TEST.AUG.VFLIP = False
    out = NucleusDatasetMapperTTA(cfg)(d)
    assert [tuple(o["image"].shape[1:]) for o in out] == [(48, 64)] * 2 + [(96, 128)] * 2
    cfg.TEST.AUG.SCALES = ()
    cfg.TEST.AUG.MIN_SIZES = (0, 48)
    cfg.TEST.AUG.FLIP = False
    out = NucleusDatasetMapperTTA(cfg)(d)
    assert [tuple(o["image"].shape[1:]) for o in out] == [(96, 128), (48, 64)]


def test_tta_outputs_rles(tiny):
    cfg, model, image = tiny
    tta = NucleusRCNNWithTTA(cfg, model, batch_size=2)
    with torch.no_grad():
        out = tta([{"image": image, "height": 96, "width": 128}])[0]["instances"]
    assert len(out) > 0 and out.has("pred_rles") and not out.has("pred_masks")
    assert all(r["size"] == [96, 128] for r in out.pred_rles)


def test_tta_undoes_vertical_flip(tiny):
    cfg, model, _ = tiny
    from fvcore.transforms import HFlipTransform, NoOpTransform, TransformList, VFlipTransform

    tta = NucleusRCNNWithTTA(cfg, model)
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, 0, 1] = 1.0  # top row
    outputs = [Instances((4, 4), pred_masks=mask.clone()), Instances((4, 4), pred_masks=mask.flip(dims=[2]))]
    outputs.append(Instances((4, 4), pred_masks=mask.flip(dims=[2, 3])))
    tfms = [TransformList([NoOpTransform()]), TransformList([VFlipTransform(4)])]
    tfms.append(TransformList([HFlipTransform(4), VFlipTransform(4)]))
    assert torch.equal(tta._reduce_pred_masks(outputs, tfms), mask)


def test_mask_scoring_rescored_once_with_chunks_and_tta(tiny):
    """MaskIoU rescoring (MODEL.MASKIOU_ON) happens once, chunked or not, and with TTA."""
    opts = ["MODEL.MASKIOU_ON", "True", "MODEL.ROI_HEADS.NAME", "MaskScoringROIHeads"]
    cfg = get_nucleus_cfg(CONFIG, TINY_OPTS + opts)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    image = tiny[2]
    with torch.no_grad():
        chunked = model([{"image": image}])[0]["instances"]
        model.mask_chunk_size = 0
        ref = model([{"image": image}])[0]["instances"]
        tta = NucleusRCNNWithTTA(cfg, model)([{"image": image, "height": 96, "width": 128}])[0]["instances"]
    assert torch.equal(chunked.cls_scores, ref.cls_scores)
    torch.testing.assert_close(chunked.scores, ref.scores, rtol=0, atol=1e-6)
    assert list(chunked.pred_rles) == list(ref.pred_rles)
    torch.testing.assert_close(tta.scores, tta.cls_scores * tta.pred_maskiou)


def test_bfloat16_outputs_become_float32():
    """Under SOLVER.CPU_BF16 the heads emit bf16 boxes/scores/masks; results are float32."""
    import torch
    from detectron2.structures import Boxes, Instances

    from d2_nucleus.modeling import nucleus_postprocess

    r = Instances((64, 64))
    r.pred_boxes = Boxes(torch.tensor([[4.0, 4.0, 20.0, 24.0]], dtype=torch.bfloat16))
    r.scores = torch.tensor([0.9], dtype=torch.bfloat16)
    r.pred_classes = torch.tensor([0])
    r.pred_masks = torch.ones(1, 1, 28, 28, dtype=torch.bfloat16)
    out = nucleus_postprocess(r, 64, 64)
    assert out.scores.dtype == torch.float32 and out.pred_boxes.tensor.dtype == torch.float32
    assert out.scores.numpy().tolist() == [0.8984375]  # bf16's 0.9
    assert out.pred_rles[0]["size"] == [64, 64]
    assert r.scores.dtype == torch.bfloat16  # the input is left as it was
