# -*- coding: utf-8 -*-
"""The CPU speed options (MODEL.CPU: GROUP_NORM, ROI_ALIGN, RPN_NMS_THREADS, ANCHOR_IOU, TUNE_MALLOC): same
parameters and state-dict keys, the same outputs, and the bf16 RoI-box fix."""
import platform

import numpy as np
import pytest
import torch
from torch import nn

from detectron2.layers import ROIAlign
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from d2_nucleus.config import get_nucleus_cfg
from d2_nucleus.modeling.cpu import (
    NucleusGroupNorm,
    ThreadedROIAlign,
    convert_group_norms,
    convert_roi_aligns,
    roi_features,
)
from d2_nucleus.modeling.cpu.malloc import tune_malloc

CONFIG = "configs/Base-Nucleus-RCNN-FPN.yaml"
TINY = [
    "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.FPN.OUT_CHANNELS", "64",
    "MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "GN", "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu",
    "MODEL.ROI_BOX_HEAD.NUM_CONV", "2", "MODEL.ROI_BOX_HEAD.NORM", "GN", "MODEL.ROI_MASK_HEAD.NORM", "GN",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "300", "MODEL.RPN.POST_NMS_TOPK_TEST", "100", "MODEL.CHANNELS_LAST", "True",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "40", "TEST.MASK_HEAD_CHUNK_SIZE", "16",
]
OFF = ["MODEL.CPU.GROUP_NORM", "torch", "MODEL.CPU.ROI_ALIGN", "torchvision", "MODEL.CPU.TUNE_MALLOC", "False",
       "MODEL.CPU.RPN_NMS_THREADS", "1", "MODEL.CPU.ANCHOR_IOU", "detectron2", "MODEL.CPU.CONV3X3", "onednn"]


@pytest.mark.parametrize("shape", [(64, 32, 14, 14), (2, 32, 40, 40), (1, 32, 7, 7)])
def test_group_norm_same_values_and_grads(shape):
    torch.manual_seed(0)
    ref = nn.GroupNorm(8, 32)
    nn.init.normal_(ref.weight)
    nn.init.normal_(ref.bias)
    ours = nn.Sequential(ref)
    assert convert_group_norms(ours) == 1 and type(ours[0]) is NucleusGroupNorm
    assert ours[0].weight is ref.weight  # shared parameters, same state-dict keys
    assert list(ours.state_dict()) == ["0.weight", "0.bias"]
    x = torch.randn(*shape).contiguous(memory_format=torch.channels_last).requires_grad_()
    g = torch.randn(*shape)
    y_ref = nn.GroupNorm.forward(ours[0], x)
    (gx_ref,) = torch.autograd.grad(y_ref, x, g)
    y = ours(x)
    (gx,) = torch.autograd.grad(y, x, g)
    assert y.is_contiguous(memory_format=torch.channels_last)  # the next convolution's layout
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(gx, gx_ref, rtol=0, atol=1e-5)
    # bfloat16: the kernels sum in a different order; stated tolerance: one bf16 step at |y| <= 8
    yb = ours(x.detach().bfloat16())
    torch.testing.assert_close(yb.float(), y_ref.detach().bfloat16().float(), rtol=0, atol=0.07)


def _rois(n, size, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, size - 40, (n, 2))
    wh = rng.uniform(2, 40, (n, 2))
    b = np.concatenate([rng.integers(0, 2, (n, 1)), xy, xy + wh], 1)
    return torch.from_numpy(b.astype(np.float32))


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_threaded_roi_align_equals_roi_align(sampling_ratio):
    torch.manual_seed(0)
    x = torch.randn(2, 16, 50, 60, requires_grad=True)
    rois = _rois(101, 200)  # odd: unequal chunks
    ref_op = ROIAlign((7, 7), 0.25, sampling_ratio, aligned=True)
    ours = nn.Sequential(ROIAlign((7, 7), 0.25, sampling_ratio, aligned=True))
    assert convert_roi_aligns(ours, threads=3) == 1 and type(ours[0]) is ThreadedROIAlign
    y_ref = ref_op(x, rois)
    y = ours[0](x, rois)
    assert torch.equal(y, y_ref)  # the same kernel on the same inputs, chunk by chunk
    g = torch.randn_like(y)
    (gx_ref,) = torch.autograd.grad(y_ref, x, g)
    (gx,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close(gx, gx_ref, rtol=0, atol=1e-5)  # summation order only
    # channels-last bfloat16 input (a bf16 channels-last model's features): read as fp32 NCHW
    xb = x.detach().bfloat16().contiguous(memory_format=torch.channels_last)
    assert torch.equal(ours[0](xb, rois), ref_op(xb.float(), rois))


def test_roi_boxes_keep_fp32_coordinates_under_bf16_autocast():
    """
    Detectron2's ROIAlign casts the boxes to the features' dtype: with bf16 features a box at
    x = 901.3 is pooled at 900 (bf16 has 8 mantissa bits). roi_features / ThreadedROIAlign pool
    at the boxes' float32 coordinates.
    """
    torch.manual_seed(0)
    feats = torch.randn(1, 8, 300, 300).bfloat16()
    rois = torch.tensor([[0, 901.3, 603.7, 923.9, 630.2]])
    op = ROIAlign((7, 7), 0.25, 0, aligned=True)
    ref = op(feats.float(), rois)  # fp32 everywhere
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d2 = op(feats, rois)
        once = op(roi_features({"p2": feats})["p2"], rois)
        threaded = ThreadedROIAlign((7, 7), 0.25, 0, aligned=True, threads=2)(feats, rois)
    assert not torch.allclose(d2.float(), ref, atol=0.05)  # the rounding this fixes
    assert torch.equal(once, ref) and torch.equal(threaded, ref)


def _model(opts, seed=0):
    cfg = get_nucleus_cfg(CONFIG, TINY + opts)
    torch.manual_seed(seed)
    return build_model(cfg).eval()


def test_speed_options_keep_checkpoints_and_fp32_outputs():
    before, after = _model(OFF), _model([])
    assert list(before.state_dict()) == list(after.state_dict())
    assert any(isinstance(m, NucleusGroupNorm) for m in after.roi_heads.modules())
    assert any(isinstance(m, ThreadedROIAlign) for m in after.roi_heads.modules())
    after.load_state_dict(before.state_dict())  # a checkpoint from before loads strictly
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 255, (3, 96, 128), dtype=np.uint8))
    inputs = [{"image": image}, {"image": image.flip(-1)}]
    with torch.no_grad():
        a = before.inference(inputs, do_postprocess=False)
        b = after.inference(inputs, do_postprocess=False)
    for x, y in zip(a, b):
        assert len(x) == len(y) > 16  # several mask-head chunks
        torch.testing.assert_close(x.pred_boxes.tensor, y.pred_boxes.tensor, rtol=0, atol=1e-3)
        torch.testing.assert_close(x.scores, y.scores, rtol=0, atol=1e-4)
        torch.testing.assert_close(x.pred_masks, y.pred_masks, rtol=0, atol=1e-4)


@pytest.mark.parametrize("bf16", [False, True])
def test_native_roi_align_same_detections(bf16):
    """The C++ pooler (MODEL.CPU.ROI_ALIGN native) changes no output bit, in fp32 and under bf16 autocast."""
    from d2_nucleus.modeling.cpu import NucleusROIPooler

    gn = ["MODEL.CPU.GROUP_NORM", "nchw"]  # (native's values differ in the last bits: test below)
    off, on = _model(gn + ["MODEL.CPU.ROI_ALIGN", "threaded"]), _model(gn)
    assert isinstance(on.roi_heads.box_pooler, NucleusROIPooler) and isinstance(on.roi_heads.mask_pooler, NucleusROIPooler)
    assert list(off.state_dict()) == list(on.state_dict())
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.integers(0, 255, (3, 96, 128), dtype=np.uint8))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        a = off.inference([{"image": image}], do_postprocess=False)[0]
        b = on.inference([{"image": image}], do_postprocess=False)[0]
    assert len(a) == len(b) > 16
    assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor) and torch.equal(a.scores, b.scores)
    assert torch.equal(a.pred_masks, b.pred_masks)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(64, 32, 14, 14), (300, 32, 7, 7)])
def test_native_group_norm_relu(shape, dtype):
    """The C++ GroupNorm + ReLU of RoI batches: float32 GroupNorm's values; training keeps PyTorch's path."""
    from d2_nucleus.modeling.cpu import native_ops

    assert native_ops() is not None
    torch.manual_seed(0)
    ours = NucleusGroupNorm(8, 32)
    ours.native, ours.relu = True, True
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-0.5, 0.5)
    x = (torch.randn(shape) * 3 + 1).to(dtype).contiguous(memory_format=torch.channels_last)
    ref = torch.relu(nn.functional.group_norm(x.float(), 8, ours.weight, ours.bias, ours.eps))
    with torch.no_grad():
        y = ours(x)
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    if dtype == torch.float32:
        torch.testing.assert_close(y, ref, rtol=0, atol=1e-5)
    else:  # bf16 output: rounding of the result only (|y| <= ~8 here: 1/32 a step at most)
        torch.testing.assert_close(y.float(), ref, rtol=0, atol=0.07)
        assert (y.float() - ref).abs().max() <= (nn.functional.group_norm(x, 8, ours.weight, ours.bias).relu().float() - ref).abs().max() + 1e-6

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape,relu", [((96, 32, 7, 7), True), ((2, 32, 40, 44), False), ((1, 64, 64, 64), False)])
def test_native_group_norm_gradients(shape, relu, dtype):
    """Training through the C++ GroupNorm (+ ReLU): float32 PyTorch's outputs and gradients."""
    torch.manual_seed(1)
    ours = NucleusGroupNorm(8, shape[1])
    ours.native, ours.relu = True, relu
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-0.5, 0.5)
    x0 = (torch.randn(shape) * 2 + 0.5).to(dtype).contiguous(memory_format=torch.channels_last)
    g = torch.randn(shape).to(dtype).contiguous(memory_format=torch.channels_last)
    xr = x0.float().contiguous().requires_grad_()
    w, b = ours.weight.detach().clone().requires_grad_(), ours.bias.detach().clone().requires_grad_()
    yr = nn.functional.group_norm(xr, 8, w, b, ours.eps)
    yr = torch.relu(yr) if relu else yr
    yr.backward(g.float())
    x = x0.clone().requires_grad_()
    y = ours(x)
    assert y.grad_fn is not None and y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    y.backward(g)
    # float32: summation order only; bf16: the rounding of the bf16 output and input gradient
    atol = 1e-5 if dtype == torch.float32 else 0.07
    torch.testing.assert_close(y.float(), yr, rtol=0, atol=atol)
    torch.testing.assert_close(x.grad.float(), xr.grad, rtol=0, atol=atol)
    torch.testing.assert_close(ours.weight.grad, w.grad, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(ours.bias.grad, b.grad, rtol=1e-4, atol=1e-3)


def test_native_group_norm_model_outputs():
    """MODEL.CPU.GROUP_NORM native: the RoI heads' ReLUs move into their GroupNorms; same detections up to rounding."""
    from detectron2.layers import Conv2d

    off, on = _model(["MODEL.CPU.GROUP_NORM", "nchw"]), _model([])
    assert list(off.state_dict()) == list(on.state_dict())
    convs = [m for m in on.roi_heads.modules() if isinstance(m, Conv2d) and isinstance(m.norm, NucleusGroupNorm)]
    assert convs and all(m.activation is None and m.norm.relu for m in convs)
    rng = np.random.default_rng(2)
    image = torch.from_numpy(rng.integers(0, 255, (3, 96, 128), dtype=np.uint8))
    with torch.no_grad():
        a = off.inference([{"image": image}], do_postprocess=False)[0]
        b = on.inference([{"image": image}], do_postprocess=False)[0]
    assert len(a) == len(b) > 16
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, rtol=0, atol=1e-3)
    torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-4)
    torch.testing.assert_close(a.pred_masks, b.pred_masks, rtol=0, atol=1e-4)


def test_threaded_rpn_nms_same_proposals():
    """MODEL.CPU.RPN_NMS_THREADS: one level a thread, the same proposals (Detectron2's per level), best first."""
    from detectron2.modeling.proposal_generator.rpn import RPN

    from d2_nucleus.modeling.cpu import NucleusRPN

    one = _model(["MODEL.PROPOSAL_GENERATOR.NAME", "RPN"])
    threaded = _model(["MODEL.CPU.RPN_NMS_THREADS", "2"])
    assert type(threaded.proposal_generator) is NucleusRPN and type(one.proposal_generator) is RPN
    threaded.load_state_dict(one.state_dict())
    rng = np.random.default_rng(3)
    image = torch.from_numpy(rng.integers(0, 255, (3, 160, 192), dtype=np.uint8))
    inputs = [{"image": image}, {"image": image.flip(-1)}]
    # under bf16 autocast too: its state is thread-local, the threads must run under the caller's
    for bf16 in (False, True):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            images = one.preprocess_image(inputs)
            features = one.backbone(images.tensor)
            a, _ = one.proposal_generator(images, features)
            b, _ = threaded.proposal_generator(images, features)
        for x, y in zip(a, b):
            assert len(x) == len(y) == 100  # POST_NMS_TOPK_TEST of TINY, cut across levels
            if bf16:  # bf16 objectness: equal scores, whose order may differ; the same set of scores
                assert torch.equal(x.objectness_logits, y.objectness_logits)  # both sorted, best first
            else:
                assert torch.equal(x.objectness_logits, y.objectness_logits)
                assert torch.equal(x.proposal_boxes.tensor, y.proposal_boxes.tensor)  # no equal scores here


def test_speed_options_train_step():
    """One bf16 training step with every option on: finite losses, gradients reach the backbone."""
    model = _model([])
    model.train()
    rng = np.random.default_rng(0)
    inst = Instances((96, 128))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 10.0, 40.0, 36.0], [60.0, 30.0, 90.0, 70.0]]))
    inst.gt_classes = torch.zeros(2, dtype=torch.int64)
    masks = torch.zeros(2, 96, 128, dtype=torch.bool)
    masks[0, 12:34, 12:38] = True
    masks[1, 32:68, 62:88] = True
    inst.gt_masks = BitMasks(masks)
    image = torch.from_numpy(rng.integers(0, 255, (3, 96, 128), dtype=np.uint8))
    with EventStorage(0), torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model([{"image": image, "instances": inst}])
        total = sum(losses.values())
        total.backward()
    assert all(torch.isfinite(v) for v in losses.values())
    trained = [p for p in model.backbone.bottom_up.parameters() if p.requires_grad]
    assert trained and all(p.grad is not None and torch.isfinite(p.grad).all() for p in trained)
    assert sum(float(p.grad.abs().sum()) for p in trained) > 0


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_tune_malloc_on_glibc():
    assert tune_malloc() is True
    assert tune_malloc() is True  # once per process, idempotent


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_threaded_roi_align_after_fork():
    """A forked child (data-loader / cluster worker) gets its own threads, not the parent's dead pool."""
    import multiprocessing as mp

    op = ThreadedROIAlign((7, 7), 0.25, 0, aligned=True, threads=2)
    x = torch.randn(2, 8, 40, 40)  # _rois uses batch indices 0 and 1
    rois = _rois(20, 150)
    expected = op(x, rois)  # creates the pool in the parent
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(_roi_align_in_child, (op, x, rois)).get(timeout=60)
    assert torch.equal(got, expected)


def _roi_align_in_child(op, x, rois):
    return op(x, rois)
