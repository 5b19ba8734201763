"""The C++ channels-last RoIAlign (csrc/roi_align_nhwc.cpp) and NucleusROIPooler: torchvision's values."""
import os

import pytest
import torch

from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import Boxes
from torchvision.ops import roi_align

from d2_nucleus.modeling.cpu import poolers as poolers_module
from d2_nucleus.modeling.cpu.native import native_ops
from d2_nucleus.modeling.cpu.poolers import NucleusROIPooler, convert_poolers

# The machines this project builds on have g++: a failed build is a failure here, not a skip.
pytestmark = pytest.mark.skipif(bool(os.environ.get("D2_NUCLEUS_NO_NATIVE")), reason="D2_NUCLEUS_NO_NATIVE set")


@pytest.fixture(scope="module")
def ops():
    ops = native_ops()
    assert ops is not None, "d2_nucleus's C++ kernels did not build (see the warning above)"
    return ops


def _pyramid(dtype, channels=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(48, 52), (24, 26), (12, 13)]  # strides 4, 8, 16 of a 192 x 208 image, 2 images
    return [torch.randn(2, channels, h, w, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
            for h, w in shapes]


def _boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 230 - 20  # some boxes leave the image
    wh = 1 + torch.rand(n, 2, generator=g) ** 2 * 120  # small nuclei and some large boxes
    return Boxes(torch.cat([xy, xy + wh], 1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_kernel_equals_torchvision_bit_for_bit(ops, dtype, aligned, sampling_ratio):
    maps = _pyramid(dtype)
    boxes = _boxes(300, seed=1).tensor
    rois = torch.cat([torch.randint(0, 2, (300, 1)).float(), boxes], 1)
    levels = torch.randint(0, 3, (300,))
    scales = [1 / 4, 1 / 8, 1 / 16]
    out = ops.roi_align_nhwc(maps, rois, levels, scales, 7, sampling_ratio, aligned, torch.float32)
    assert out.shape == (300, 24, 7, 7) and out.is_contiguous(memory_format=torch.channels_last)
    ref = torch.empty(out.shape)
    for level, scale in enumerate(scales):
        i = (levels == level).nonzero()[:, 0]
        ref[i] = roi_align(maps[level].float().contiguous(), rois[i], 7, scale, sampling_ratio, aligned)
    assert torch.equal(out, ref)
    bf16 = ops.roi_align_nhwc(maps, rois, levels, scales, 7, sampling_ratio, aligned, torch.bfloat16)
    assert bf16.dtype == torch.bfloat16 and torch.equal(bf16, ref.to(torch.bfloat16))


def test_kernel_rejects_bad_input(ops):
    maps = _pyramid(torch.float32)
    rois = torch.tensor([[0.0, 1, 1, 20, 20]])
    with pytest.raises(RuntimeError, match="level out of range"):
        ops.roi_align_nhwc(maps, rois, torch.tensor([3]), [0.25, 0.125, 0.0625], 7, 0, True, torch.float32)
    with pytest.raises(RuntimeError, match="channels-last"):
        ops.roi_align_nhwc([m.contiguous() for m in maps], rois, torch.tensor([0]), [0.25, 0.125, 0.0625],
                           7, 0, True, torch.float32)
    empty = ops.roi_align_nhwc(maps, torch.zeros(0, 5), torch.zeros(0, dtype=torch.long), [0.25, 0.125, 0.0625],
                               14, 0, True, torch.float32)
    assert empty.shape == (0, 24, 14, 14)


def _poolers(size=14):
    kw = dict(output_size=size, scales=(1 / 4, 1 / 8, 1 / 16), sampling_ratio=0, pooler_type="ROIAlignV2")
    ours = ROIPooler(**kw)
    assert convert_poolers(ours) == 1 and isinstance(ours, NucleusROIPooler)
    return ROIPooler(**kw), ours


def test_pooler_equals_detectron2s_at_inference(ops):
    ref_pooler, pooler = _poolers()
    maps = _pyramid(torch.float32)
    boxes = [_boxes(150, seed=2), _boxes(90, seed=3)]
    with torch.no_grad():
        ref = ref_pooler([m.contiguous() for m in maps], boxes)
        out = pooler(maps, boxes)
        assert out.is_contiguous(memory_format=torch.channels_last)  # the kernel ran
        assert torch.equal(out, ref)
        # under bf16 autocast: bf16 out, the values the heads' first layer casts torchvision's to
        # (a bf16 model's maps as they are; torchvision gets them as fp32, NCHW)
        maps16 = [m.to(torch.bfloat16) for m in maps]
        ref16 = ref_pooler([m.float().contiguous() for m in maps16], boxes)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out16 = pooler(maps16, boxes)
        assert out16.dtype == torch.bfloat16 and torch.equal(out16, ref16.to(torch.bfloat16))
        assert pooler(maps, [Boxes(torch.zeros(0, 4)), Boxes(torch.zeros(0, 4))]).shape == (0, 24, 14, 14)


@pytest.mark.parametrize("aligned", [True, False])
def test_pooler_gradients_equal_torchvisions(ops, aligned):
    """Training: the C++ backward gives torchvision's (single-threaded) gradients bit for bit."""
    kw = dict(output_size=7, scales=(1 / 4, 1 / 8, 1 / 16), sampling_ratio=0,
              pooler_type="ROIAlignV2" if aligned else "ROIAlign")
    ref_pooler, pooler = ROIPooler(**kw), ROIPooler(**kw)
    convert_poolers(pooler)
    boxes = [_boxes(150, seed=4), _boxes(90, seed=5)]
    maps = _pyramid(torch.float32)
    ours = [m.clone().requires_grad_() for m in maps]
    ref = [m.contiguous().requires_grad_() for m in maps]
    out, expected = pooler(ours, boxes), ref_pooler(ref, boxes)
    assert out.grad_fn is not None and torch.equal(out, expected)
    g = torch.randn(expected.shape, generator=torch.Generator().manual_seed(6))
    out.backward(g)
    expected.backward(g)
    for a, b in zip(ours, ref):
        assert a.grad.dtype == torch.float32 and torch.equal(a.grad, b.grad)
    assert all(b.grad.abs().sum() > 0 for b in ref[:2])  # the boxes reach two levels


def test_pooler_bf16_training_step(ops):
    """bf16 maps under autocast (the recipe): bf16 features, bf16 gradients of torchvision's values."""
    _, pooler = _poolers(7)
    ref_pooler = ROIPooler(output_size=7, scales=(1 / 4, 1 / 8, 1 / 16), sampling_ratio=0, pooler_type="ROIAlignV2")
    boxes = [_boxes(60, seed=11), _boxes(50, seed=12)]
    maps = [m.requires_grad_() for m in _pyramid(torch.bfloat16)]
    ref_maps = [m.detach().float().contiguous().requires_grad_() for m in maps]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pooler(maps, boxes)
    assert out.dtype == torch.bfloat16
    expected = ref_pooler(ref_maps, boxes)
    assert torch.equal(out, expected.to(torch.bfloat16))
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(13))
    out.backward(g.to(torch.bfloat16))
    expected.backward(g.to(torch.bfloat16).float())
    for a, b in zip(maps, ref_maps):
        assert a.grad.dtype == torch.bfloat16 and torch.equal(a.grad, b.grad.to(torch.bfloat16))


def test_pooler_falls_back_without_kernels(ops, monkeypatch):
    ref_pooler, pooler = _poolers(7)
    maps = _pyramid(torch.float32)
    boxes = [_boxes(40, seed=4), _boxes(30, seed=5)]
    monkeypatch.setattr(poolers_module, "native_ops", lambda: None)  # no compiler
    with torch.no_grad():
        out = pooler(maps, boxes)
    assert out.is_contiguous() and torch.equal(out, ref_pooler([m.contiguous() for m in maps], boxes))


def test_native_ops_fall_back_with_one_warning(monkeypatch, caplog):
    from d2_nucleus.modeling.cpu import native

    def fail(verbose=False):
        raise RuntimeError("g++: command not found")

    monkeypatch.setattr(native, "_state", {"tried": False, "ops": None})
    monkeypatch.setattr(native, "build_native_ops", fail)
    with caplog.at_level("WARNING", logger=native.__name__):
        assert native.native_ops() is None and native.native_ops() is None
    warned = [r for r in caplog.records if "could not be built" in r.getMessage()]
    assert len(warned) == 1 and "g++: command not found" in warned[0].getMessage()


def test_pairwise_iou_equals_detectron2s(ops):
    from detectron2.structures import pairwise_iou

    g = torch.Generator().manual_seed(7)
    gt = _boxes(60, seed=8).tensor
    gt[:3, 2:] = gt[:3, :2]  # empty boxes
    xy = torch.rand(5000, 2, generator=g) * 260 - 30
    anchors = torch.cat([xy, xy + 2 + torch.rand(5000, 2, generator=g) * 50], 1)
    ref = pairwise_iou(Boxes(gt), Boxes(anchors))
    assert torch.equal(ops.pairwise_iou(gt, anchors), ref) and (ref > 0).sum() > 1000
    assert ops.pairwise_iou(gt[:0], anchors).shape == (0, 5000)


def test_rpn_anchor_matching_same_labels(ops):
    """NucleusRPN's native_iou: Detectron2's anchor labels and matched boxes; Detectron2's module untouched."""
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.proposal_generator import rpn as d2_rpn
    from detectron2.modeling.proposal_generator.rpn import RPN
    from detectron2.structures import Instances

    from d2_nucleus.config import add_cpu_config
    from d2_nucleus.modeling.cpu import NucleusRPN

    cfg = get_cfg()
    add_cpu_config(cfg)
    cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3"]
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16], [32]]
    cfg.MODEL.CPU.RPN_NMS_THREADS = 1
    shapes = {"p2": ShapeSpec(channels=8, stride=4), "p3": ShapeSpec(channels=8, stride=8)}
    ref, ours = RPN(cfg, shapes), NucleusRPN(cfg, shapes)
    assert ours.native_iou and ours.nms_threads == 1
    feats = [torch.zeros(2, 8, 48, 52), torch.zeros(2, 8, 24, 26)]
    anchors = ref.anchor_generator(feats)
    gts = []
    for seed in (9, 10):
        inst = Instances((192, 208))
        inst.gt_boxes = _boxes(40, seed)
        inst.gt_boxes.clip((192, 208))
        gts.append(inst)
    torch.manual_seed(0)
    labels_a, boxes_a = ref.label_and_sample_anchors(anchors, gts)
    torch.manual_seed(0)
    labels_b, boxes_b = ours.label_and_sample_anchors(anchors, gts)
    for a, b in zip(labels_a, labels_b):
        assert torch.equal(a, b) and (a == 1).sum() > 10
    for a, b in zip(boxes_a, boxes_b):
        assert torch.equal(a, b)
    from detectron2.structures import pairwise_iou

    assert d2_rpn.pairwise_iou is pairwise_iou
