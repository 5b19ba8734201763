# -*- coding: utf-8 -*-
"""MODEL.FROZEN_GROUP_NORM and tools/freeze_group_norm.py: calibrated statistics, outputs that do
not depend on the rest of the input, the written checkpoint + config, and bad input."""
import copy
import os

import numpy as np
import pytest
import torch
from torch import nn


from d2_nucleus.checkpoint import WeightsMismatchError
from d2_nucleus.config import get_inference_cfg, get_nucleus_cfg
from d2_nucleus.engine.predictor import NucleusPredictor
from d2_nucleus.modeling import FrozenGroupNorm, calibrate_frozen_group_norms, convert_frozen_group_norms

from tools_cli import load_tool
from weights import save_untrained_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "Base-Nucleus-RCNN-FPN.yaml")
TINY = [
    "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.FPN.OUT_CHANNELS", "64",
    "MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "GN", "MODEL.DEVICE", "cpu",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "300", "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "30",
]


def _net(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU(),
                        nn.Conv2d(16, 16, 3, padding=1), nn.GroupNorm(4, 16))
    for m in net:
        if isinstance(m, nn.GroupNorm):
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)
    return net


def test_calibrated_on_one_input_equals_group_norm():
    net = _net()
    x = torch.randn(1, 3, 20, 24)
    ref = net(x)
    frozen = copy.deepcopy(net)
    assert convert_frozen_group_norms(frozen) == 2
    assert frozen[1].weight is not net[1].weight and isinstance(frozen[1], FrozenGroupNorm)
    assert set(frozen.state_dict()) == set(net.state_dict()) | {
        "1.group_mean", "1.group_var", "4.group_mean", "4.group_var"}
    # calibrating runs the layers as GroupNorm (same outputs as the unconverted net) ...
    assert calibrate_frozen_group_norms(frozen, frozen, [x]) == 1
    # ... and with the statistics of that one input, the frozen layers reproduce GroupNorm on it
    torch.testing.assert_close(frozen(x), ref, rtol=0, atol=1e-5)
    # bf16 under autocast (as the CPU recipe runs): within bf16 rounding of the fp32 result
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        yb = frozen[1](frozen[0](x).bfloat16())
    assert yb.dtype == torch.bfloat16
    torch.testing.assert_close(yb.float(), net[1](net[0](x)).detach(), rtol=0.02, atol=0.05)
    # channels-last stays channels-last (the next convolution's layout)
    y = frozen[1](torch.randn(1, 16, 8, 8).contiguous(memory_format=torch.channels_last))
    assert y.is_contiguous(memory_format=torch.channels_last)


def test_statistics_are_the_mean_of_each_inputs_own():
    layer = nn.Sequential(FrozenGroupNorm(2, 4))
    a = torch.randn(1, 4, 5, 5) * 3 + 1
    b = torch.randn(2, 4, 6, 6) - 2
    assert calibrate_frozen_group_norms(layer, layer, [a, b]) == 3
    per_input = [x.reshape(x.shape[0], 2, -1) for x in (a, b)]
    means = torch.cat([p.mean(2) for p in per_input])
    vars_ = torch.cat([p.var(2, unbiased=False) for p in per_input])
    torch.testing.assert_close(layer[0].group_mean, means.mean(0))
    torch.testing.assert_close(layer[0].group_var, vars_.mean(0))


def test_uncalibrated_layer_refuses_to_run_and_empty_calibration():
    layer = FrozenGroupNorm(2, 4)
    with pytest.raises(RuntimeError, match="tools/freeze_group_norm.py"):
        layer(torch.randn(1, 4, 3, 3))
    with pytest.raises(ValueError, match="no input"):
        calibrate_frozen_group_norms(layer, layer, [])
    with pytest.raises(ValueError, match="no FrozenGroupNorm"):
        calibrate_frozen_group_norms(nn.ReLU(), lambda b: b, [1])


def test_frozen_output_does_not_depend_on_the_rest_of_the_input():
    """A patch alone and the same patch inside other content: GroupNorm gives it other features,
    the frozen layers the same ones (away from the border, within the receptive field)."""
    net = _net()
    frozen = copy.deepcopy(net)
    convert_frozen_group_norms(frozen)
    calibrate_frozen_group_norms(frozen, frozen, [torch.randn(1, 3, 32, 32) for _ in range(3)])
    patch = torch.randn(1, 3, 24, 24)
    big = torch.full((1, 3, 64, 64), 2.0)  # "glass": bright and flat
    big[:, :, 20:44, 20:44] = patch
    core = (slice(None), slice(None), slice(4, 20), slice(4, 20))
    big_core = (slice(None), slice(None), slice(24, 40), slice(24, 40))
    with torch.no_grad():
        torch.testing.assert_close(frozen(big)[big_core], frozen(patch)[core], rtol=0, atol=1e-5)
        assert (net(big)[big_core] - net(patch)[core]).abs().max() > 0.1


@pytest.fixture(scope="module")
def gn_weights(tmp_path_factory):
    cfg = get_nucleus_cfg(CONFIG, TINY + ["MODEL.WEIGHTS", ""])
    return save_untrained_weights(cfg, tmp_path_factory.mktemp("weights") / "model_final.pth")


CLI = load_tool("freeze_group_norm")


def test_tool_writes_checkpoint_and_config_that_predict(gn_weights, synthetic_prepared, tmp_path, capsys):
    out = tmp_path / "frozen" / "model_frozen_gn.pth"
    argv = ["--config-file", CONFIG, "--weights", gn_weights, "--data-root", synthetic_prepared,
            "--output", str(out), "--num-images", "2", "--quiet", *TINY]
    assert CLI.main(argv) == 0
    assert "calibrated on 2 images" in capsys.readouterr().out
    config = str(out.with_suffix(".yaml"))
    assert sorted(os.listdir(out.parent)) == ["model_frozen_gn.pth", "model_frozen_gn.yaml"]
    state = torch.load(str(out), weights_only=True)["model"]
    stats = [k for k in state if k.endswith("group_mean")]
    assert stats and all(k.startswith("backbone.") for k in stats)  # RoI heads keep GroupNorm
    assert all(torch.isfinite(state[k]).all() for k in stats)

    # the written config loads the written checkpoint (strictly) and predicts
    cfg = get_inference_cfg(config, device="cpu")
    assert cfg.MODEL.FROZEN_GROUP_NORM and cfg.MODEL.WEIGHTS == str(out)
    cfg.freeze()
    predictor = NucleusPredictor(cfg)
    assert isinstance(predictor.model.backbone.bottom_up.stem.conv1.norm, FrozenGroupNorm)
    image = (np.random.default_rng(0).random((96, 80, 3)) * 255).astype(np.uint8)
    assert len(predictor([image])[0]) > 0

    # a second run does not overwrite what the user has, without --overwrite
    assert CLI.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("freeze_group_norm: error:") and "model_frozen_gn.pth" in err and err.count("\n") == 1
    assert CLI.main(["--overwrite"] + argv) == 0


def test_bad_input(gn_weights, synthetic_prepared, tmp_path, capsys):
    base = ["--config-file", CONFIG, "--data-root", synthetic_prepared, "--quiet"]
    # not a .pth name: nothing written
    assert CLI.main(base + ["--weights", gn_weights, "--output", str(tmp_path / "x.bin"), *TINY]) == 2
    assert ".pth" in capsys.readouterr().err and os.listdir(tmp_path) == []
    # a BatchNorm-free, GroupNorm-free backbone (FrozenBN): nothing to freeze
    opts = [o if o != "GN" else "FrozenBN" for o in TINY]
    assert CLI.main(base + ["--weights", "", "--output", str(tmp_path / "y.pth"), *opts]) == 2
    assert capsys.readouterr().err.startswith("freeze_group_norm: error:")
    # the frozen config with GroupNorm (uncalibrated) weights: refused by the strict loader
    cfg = get_nucleus_cfg(CONFIG, TINY + ["MODEL.WEIGHTS", gn_weights, "MODEL.FROZEN_GROUP_NORM", "True"])
    with pytest.raises(WeightsMismatchError, match="group_mean"):
        NucleusPredictor(cfg)
    assert os.listdir(tmp_path) == []
