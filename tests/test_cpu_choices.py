# -*- coding: utf-8 -*-
"""
The per-CPU choices (d2_nucleus/utils/cpu_features.py) and the Winograd 3 x 3 convolutions they pick
on AVX2 CPUs (MODEL.CPU.CONV3X3, d2_nucleus/modeling/cpu/winograd.py): float32 values within the
algorithm's rounding, PyTorch's convolution wherever the path does not apply, same parameters.
"""
import numpy as np
import pytest
import torch
from torch import nn

from detectron2.layers import Conv2d
from detectron2.modeling import build_model

from d2_nucleus.config import ConfigError, get_nucleus_cfg
from d2_nucleus.modeling.cpu.options import CPUOptions
from d2_nucleus.modeling.cpu.winograd import MAX_SIDE, MIN_SIDE, WinogradConv2d, convert_winograd_convs
from d2_nucleus.utils import cpu_features

needs_nnpack = pytest.mark.skipif(not cpu_features.nnpack_available(), reason="this PyTorch has no NNPACK")

CONFIG = "configs/Base-Nucleus-RCNN-FPN.yaml"
TINY = [
    "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.FPN.OUT_CHANNELS", "64",
    "MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "GN", "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu",
    "MODEL.ROI_BOX_HEAD.NUM_CONV", "2", "MODEL.ROI_BOX_HEAD.NORM", "GN", "MODEL.ROI_MASK_HEAD.NORM", "GN",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "300", "MODEL.RPN.POST_NMS_TOPK_TEST", "100", "MODEL.CHANNELS_LAST", "True",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "40", "TEST.MASK_HEAD_CHUNK_SIZE", "16",
]


@pytest.mark.parametrize("flags,capability,nnpack,expected", [
    ({"avx2", "fma"}, "AVX2", True, "winograd"),  # AMD Zen 2/3, Intel before AVX-512
    ({"avx2", "fma"}, "AVX2", False, "onednn"),  # a PyTorch built without NNPACK
    ({"avx2", "fma", "avx512f", "avx512_bf16"}, "AVX512", True, "onednn"),  # oneDNN's own AVX-512 kernels
    ({"avx2", "fma", "avx512f", "amx_bf16"}, "AVX2", True, "onednn"),  # an AVX-512 CPU stays oneDNN's
    ({"avx2", "fma"}, "DEFAULT", True, "onednn"),  # ATEN_CPU_CAPABILITY=default (an emulated older CPU)
    (set(), "DEFAULT", False, "onednn"),
])
def test_conv3x3_auto_follows_the_cpu(monkeypatch, flags, capability, nnpack, expected):
    monkeypatch.setattr(cpu_features, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(cpu_features, "_capability", lambda: capability)
    monkeypatch.setattr(cpu_features, "nnpack_available", lambda: nnpack)
    choice, why = cpu_features.resolve_conv3x3("auto")
    assert choice == expected and why.startswith("auto: ")
    assert cpu_features.resolve_conv3x3("onednn") == ("onednn", "MODEL.CPU.CONV3X3 onednn")
    assert cpu_features.resolve_conv3x3("winograd")[0] == "winograd"
    cfg = get_nucleus_cfg(CONFIG, ["MODEL.DEVICE", "cpu"])
    assert cfg.MODEL.CPU.CONV3X3 == "onednn" and CPUOptions.from_config(cfg).conv3x3 == "onednn"  # the default
    cfg = get_nucleus_cfg(CONFIG, ["MODEL.DEVICE", "cpu", "MODEL.CPU.CONV3X3", "auto"])
    assert CPUOptions.from_config(cfg).conv3x3 == expected
    cfg = get_nucleus_cfg(CONFIG, ["MODEL.DEVICE", "cpu", "MODEL.CPU.CONV3X3", "onednn"])
    assert CPUOptions.from_config(cfg).conv3x3 == "onednn"


def test_conv3x3_choices_are_checked():
    with pytest.raises(ConfigError, match="MODEL.CPU.CONV3X3 must be one of auto, onednn, winograd; got 'fft'"):
        get_nucleus_cfg(CONFIG, ["MODEL.CPU.CONV3X3", "fft"])
    with pytest.raises(ValueError, match="MODEL.CPU.CONV3X3 must be auto, onednn or winograd"):
        cpu_features.resolve_conv3x3("fft")


def _conv(channels=32, norm=True, bias=False, seed=0):
    torch.manual_seed(seed)
    conv = Conv2d(channels, channels, 3, padding=1, bias=bias, norm=nn.GroupNorm(8, channels) if norm else None,
                  activation=nn.ReLU())
    with torch.no_grad():
        if norm:
            conv.norm.weight.normal_()
            conv.norm.bias.normal_()
    return conv.eval()


@needs_nnpack
@pytest.mark.parametrize("shape", [(64, 32, 14, 14), (1, 32, 40, 56), (2, 32, MAX_SIDE, 24)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_winograd_values_within_rounding(shape, channels_last, bias):
    ref = _conv(shape[1], norm=not bias, bias=bias)
    ours = _conv(shape[1], norm=not bias, bias=bias)
    assert convert_winograd_convs(ours) == 1 and type(ours) is WinogradConv2d
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(shape).contiguous(memory_format=fmt)
    with torch.no_grad():
        y, yr = ours(x), ref(x)
        exact = torch.nn.functional.conv2d(x.double(), ours.weight.double(), None if ours.bias is None
                                           else ours.bias.double(), padding=1)
        raw = WinogradConv2d.forward(_no_norm(ours), x)
    assert y.shape == yr.shape and y.is_contiguous(memory_format=fmt)
    # the convolution itself: within 1e-5 of the largest output (float32's direct kernel: ~1e-6)
    scale = exact.abs().max().item()
    assert (raw.double() - exact.relu()).abs().max().item() <= 1e-5 * scale
    # after GroupNorm + ReLU (the layer as the model runs it)
    torch.testing.assert_close(y, yr, rtol=0, atol=1e-4)


def _no_norm(conv):
    """The conv of ``conv`` with its ReLU but without its norm (to compare with a double-precision convolution)."""
    import copy

    c = copy.copy(conv)
    c.norm = None
    return c


@needs_nnpack
def test_winograd_falls_back_where_it_does_not_apply():
    ref, ours = _conv(), _conv()
    convert_winograd_convs(ours)
    calls = []
    real = torch._nnpack_spatial_convolution

    def spy(*a, **k):
        calls.append(a[0].shape)
        return real(*a, **k)

    torch._nnpack_spatial_convolution = spy
    try:
        with torch.no_grad():
            for x in (torch.randn(8, 32, MIN_SIDE - 1, 20), torch.randn(1, 32, MAX_SIDE + 1, 20)):  # too small, too large
                assert torch.equal(ours(x), ref(x))
            x = torch.randn(4, 32, 16, 16)
            with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 autocast: oneDNN's (or ATen's) kernel
                assert torch.equal(ours(x), ref(x))
        assert torch.equal(ours(x), ref(x))  # autograd on: PyTorch's convolution (it has the backward)
        ours.train(), ref.train()
        with torch.no_grad():
            assert torch.equal(ours(x), ref(x))
        assert calls == []
        ours.eval()
        with torch.no_grad():
            ours(x)
        assert calls == [x.shape]
    finally:
        torch._nnpack_spatial_convolution = real


def _model(opts, seed=0):
    cfg = get_nucleus_cfg(CONFIG, TINY + opts)
    torch.manual_seed(seed)
    return build_model(cfg).eval()


@needs_nnpack
def test_winograd_model_same_checkpoint_same_detections():
    """MODEL.CPU.CONV3X3 winograd: only 3 x 3 stride-1 convs change class; same state dict; detections within rounding."""
    off, on = _model(["MODEL.CPU.CONV3X3", "onednn"]), _model(["MODEL.CPU.CONV3X3", "winograd"])
    assert list(off.state_dict()) == list(on.state_dict())
    on.load_state_dict(off.state_dict())  # strict: a checkpoint loads either way
    swapped = [n for n, m in on.named_modules() if isinstance(m, WinogradConv2d)]
    assert "roi_heads.mask_head.mask_fcn1" in swapped and "backbone.bottom_up.res3.0.conv2" in swapped
    assert "backbone.bottom_up.res3.0.conv1" not in swapped  # stride 2
    assert not any(isinstance(m, WinogradConv2d) for m in off.modules())
    rng = np.random.default_rng(3)
    image = torch.from_numpy(rng.integers(0, 255, (3, 128, 160), dtype=np.uint8))
    with torch.no_grad():
        a = off.inference([{"image": image}], do_postprocess=False)[0]
        b = on.inference([{"image": image}], do_postprocess=False)[0]
    assert len(a) == len(b) > 16
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, rtol=0, atol=1e-2)
    torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-4)
    torch.testing.assert_close(a.pred_masks, b.pred_masks, rtol=0, atol=1e-3)
