# -*- coding: utf-8 -*-
"""The config: keys of earlier versions read as today's, one meaning of the resolution, the CPU precision choice."""
import os

import pytest
import yaml

from d2_nucleus.config import ConfigError, get_nucleus_cfg, input_resize_factor
from d2_nucleus.utils import autocast, cpu_features

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "configs", "cpu", "mask_rcnn_R_18_FPN_cpu_gn.yaml")


def _old_dump(tmp_path, **model):
    """A config as tools/train_net.py and tools/freeze_group_norm.py dumped it before MODEL.CPU."""
    keys = {"FAST_GROUP_NORM": True, "NATIVE_GROUP_NORM": True, "NATIVE_ROI_ALIGN": True, "ROI_FEATURES_ONCE": True,
            "ROI_ALIGN_THREADS": 0, "RPN_NMS_THREADS": 0, "NATIVE_ANCHOR_IOU": True, "CPU_TUNE_MALLOC": True,
            "PIXEL_SIZE_UM": 0.0, **model}
    lines = [f"_BASE_: {RECIPE}", "MODEL:", "  PROPOSAL_GENERATOR:", "    NAME: RPN"]
    lines += [f"  {k}: {v}" for k, v in keys.items()]
    lines += ["SOLVER:", "  CPU_BF16: true"]
    path = tmp_path / "old.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_old_dumped_config_loads_as_today(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        cfg = get_nucleus_cfg(_old_dump(tmp_path))
    assert dict(cfg.MODEL.CPU) == {"GROUP_NORM": "native", "ROI_ALIGN": "native", "RPN_NMS_THREADS": 0,
                                   "ANCHOR_IOU": "native", "TUNE_MALLOC": True, "CONV3X3": "onednn"}
    assert cfg.MODEL.PROPOSAL_GENERATOR.NAME == "NucleusRPN"  # what the old keys converted RPN into
    assert cfg.MODEL.PIXEL_SIZE_UM == 0.25 and cfg.SOLVER.CPU_BF16 == "True"
    notes = [r.getMessage() for r in caplog.records if "deprecated config keys" in r.getMessage()]
    assert len(notes) == 1 and "old.yaml" in notes[0] and "MODEL.NATIVE_ROI_ALIGN" in notes[0]
    # a dump of today's config loads to the same values
    dumped = tmp_path / "new.yaml"
    dumped.write_text(cfg.dump())
    again = get_nucleus_cfg(str(dumped))  # the same values (YAML anchors and tuple/list aside: Detectron2's dump)
    assert yaml.safe_load(again.dump()) == yaml.safe_load(cfg.dump())


@pytest.mark.parametrize("old,expected", [
    ({"FAST_GROUP_NORM": False}, {"GROUP_NORM": "torch"}),
    ({"NATIVE_GROUP_NORM": False}, {"GROUP_NORM": "nchw"}),
    ({"NATIVE_ROI_ALIGN": False}, {"ROI_ALIGN": "threaded"}),
    ({"NATIVE_ROI_ALIGN": False, "ROI_FEATURES_ONCE": False, "ROI_ALIGN_THREADS": 1}, {"ROI_ALIGN": "torchvision"}),
    ({"NATIVE_ANCHOR_IOU": False}, {"ANCHOR_IOU": "detectron2"}),
    ({"RPN_NMS_THREADS": 1, "CPU_TUNE_MALLOC": False}, {"RPN_NMS_THREADS": 1, "TUNE_MALLOC": False}),
])
def test_old_keys_on_the_command_line(old, expected):
    opts = [x for k, v in old.items() for x in (f"MODEL.{k}", str(v))]
    cfg = get_nucleus_cfg(RECIPE, opts)
    for key, value in expected.items():
        assert cfg.MODEL.CPU[key] == value, key


def test_old_rpn_keys_turn_rpn_into_nucleus_rpn_only_when_asked(tmp_path):
    path = _old_dump(tmp_path, RPN_NMS_THREADS=1, NATIVE_ANCHOR_IOU=False)
    assert get_nucleus_cfg(path).MODEL.PROPOSAL_GENERATOR.NAME == "RPN"  # both off: Detectron2's RPN, as before


def test_cpu_choices_are_checked():
    with pytest.raises(ConfigError, match="MODEL.CPU.GROUP_NORM must be one of torch, nchw, native; got 'fast'"):
        get_nucleus_cfg(RECIPE, ["MODEL.CPU.GROUP_NORM", "fast"])
    with pytest.raises(ConfigError, match="SOLVER.CPU_BF16 must be auto, True or False"):
        get_nucleus_cfg(RECIPE, ["SOLVER.CPU_BF16", "maybe"])


@pytest.mark.parametrize("flags,expected", [
    ({"avx2", "amx_bf16", "avx512_bf16"}, True),
    ({"avx2", "avx512f", "avx512_bf16"}, False),
    ({"avx2", "fma"}, False),
    (set(), False),
])
def test_auto_precision_follows_the_cpu(monkeypatch, flags, expected):
    monkeypatch.setattr(cpu_features, "cpu_flags", lambda: frozenset(flags))
    on, why = autocast.resolve_cpu_bf16("auto")
    assert on is expected and why.startswith("auto: ")
    assert autocast.resolve_cpu_bf16(True) == (True, "SOLVER.CPU_BF16 True")
    assert autocast.resolve_cpu_bf16("False")[0] is False
    cfg = get_nucleus_cfg(RECIPE, ["MODEL.DEVICE", "cpu"])
    assert cfg.SOLVER.CPU_BF16 == "auto" and autocast.cpu_bf16_enabled(cfg) is expected
    cfg = get_nucleus_cfg(RECIPE, ["MODEL.DEVICE", "cpu", "SOLVER.CPU_BF16", "True"])
    assert autocast.cpu_bf16_enabled(cfg) is True


def test_this_cpus_flags_are_read():
    flags = autocast.cpu_flags()
    if os.path.isfile("/proc/cpuinfo"):
        assert "sse2" in flags or "fp" in flags or "asimd" in flags  # x86-64 or Arm


def test_resolution_one_meaning():
    cfg = get_nucleus_cfg(RECIPE)
    assert cfg.MODEL.PIXEL_SIZE_UM == 0.25
    assert input_resize_factor(cfg) == 1.0 and input_resize_factor(cfg, 0.26) == 1.0  # within SLIDE.MPP_TOLERANCE
    assert input_resize_factor(cfg, 0.5) == 2.0 and input_resize_factor(cfg, 0.125) == 0.5
    assert get_nucleus_cfg(RECIPE, ["MODEL.PIXEL_SIZE_UM", "0"]).MODEL.PIXEL_SIZE_UM == 0.25  # old "unknown"
