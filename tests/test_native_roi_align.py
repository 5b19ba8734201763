"""The C++ channels-last RoIAlign (csrc/roi_align_nhwc.cpp) and NucleusROIPooler: torchvision's values."""
import os

import pytest
import torch

from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import Boxes
from torchvision.ops import roi_align

from d2_nucleus.modeling import poolers as poolers_module
from d2_nucleus.modeling.native import native_ops
from d2_nucleus.modeling.poolers import NucleusROIPooler, convert_poolers

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


def test_pooler_falls_back_with_gradients_or_without_kernels(ops, monkeypatch):
    ref_pooler, pooler = _poolers(7)
    maps = [m.requires_grad_() for m in _pyramid(torch.float32)]
    boxes = [_boxes(40, seed=4), _boxes(30, seed=5)]
    out = pooler(maps, boxes)  # training: Detectron2's path, with a backward
    assert out.grad_fn is not None and torch.equal(out, ref_pooler(maps, boxes))
    out.sum().backward()
    assert all(m.grad is not None for m in maps)
    monkeypatch.setattr(poolers_module, "native_ops", lambda: None)  # no compiler
    with torch.no_grad():
        assert torch.equal(pooler([m.detach() for m in maps], boxes), ref_pooler([m.detach() for m in maps], boxes))


def test_native_ops_fall_back_with_one_warning(monkeypatch, caplog):
    from d2_nucleus.modeling import native

    def fail(verbose=False):
        raise RuntimeError("g++: command not found")

    monkeypatch.setattr(native, "_state", {"tried": False, "ops": None})
    monkeypatch.setattr(native, "build_native_ops", fail)
    with caplog.at_level("WARNING", logger=native.__name__):
        assert native.native_ops() is None and native.native_ops() is None
    warned = [r for r in caplog.records if "could not be built" in r.getMessage()]
    assert len(warned) == 1 and "g++: command not found" in warned[0].getMessage()
